// rok web pages: switch namespace, copy a version's URL, and restore a version while showing its progress.
(function () {
  "use strict";

  document.addEventListener("change", (event) => {
    const select = event.target.closest("header form.namespace select");
    if (select) select.form.submit();
  });

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back below */ }
    }
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const ok = await copyText(button.dataset.url);
    button.textContent = ok ? "copied" : "copy failed";
    button.classList.toggle("copied", ok);
    setTimeout(() => { button.textContent = "copy"; button.classList.remove("copied"); }, 2000);
  });

  const dialog = document.getElementById("restore-dialog");
  const form = document.getElementById("restore-form");
  const bar = document.getElementById("restore-bar");
  const stateText = document.getElementById("restore-state");
  const progressBox = document.getElementById("restore-progress");
  const message = document.getElementById("restore-message");
  const startButton = document.getElementById("restore-start");
  let currentUrl = null;
  let polling = null;

  function human(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function show(status) {
    progressBox.hidden = false;
    const total = status.bytes_total || 0;
    bar.max = total > 0 ? total : 1;
    bar.value = total > 0 ? status.bytes_done : (status.state === "completed" ? 1 : 0);
    stateText.textContent = status.state + (total > 0 ? " · " + human(status.bytes_done) + " of " + human(total) : "");
    message.className = "message " + status.state;
    if (status.state === "completed") {
      const vols = (status.volumes || []).map((v) => v.name + " → " + v.location).join(", ");
      message.textContent = "Restored in " + (status.seconds || 0).toFixed(1) + "s: " + vols;
    } else if (status.state === "failed") {
      message.textContent = "Restore failed: " + status.reason;
    } else if (status.state === "requested") {
      message.textContent = "Waiting for a restorer to take the request…";
    } else {
      message.textContent = "Restoring…";
    }
  }

  async function poll(requestId) {
    const response = await fetch("/restores/" + encodeURIComponent(requestId));
    const status = await response.json();
    if (!response.ok) { message.textContent = status.error; message.className = "message failed"; return; }
    show(status);
    if (status.state === "completed" || status.state === "failed") {
      startButton.disabled = false;
      return;
    }
    polling = setTimeout(() => poll(requestId), 300);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.restore");
    if (!button || !dialog) return;
    currentUrl = button.dataset.url;
    document.getElementById("restore-url").textContent = currentUrl;
    const select = document.getElementById("restore-volume");
    select.innerHTML = '<option value="">all volumes</option>';
    (button.dataset.volumes || "").split(",").filter(Boolean).forEach((name) => {
      const option = document.createElement("option");
      option.value = name; option.textContent = name;
      select.appendChild(option);
    });
    progressBox.hidden = true;
    message.textContent = ""; message.className = "message";
    startButton.disabled = false;
    dialog.showModal();
  });

  if (form) {
    document.getElementById("restore-cancel").addEventListener("click", () => {
      clearTimeout(polling);
      dialog.close();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearTimeout(polling);
      const target = document.getElementById("restore-target").value.trim();
      const volume = document.getElementById("restore-volume").value;
      const kind = document.getElementById("restore-kind");
      startButton.disabled = true;
      message.className = "message"; message.textContent = "Requesting…";
      const response = await fetch("/restores", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign(
          { url: currentUrl, target: target, volumes: volume ? [volume] : [] },
          kind ? { kind: kind.value } : {},  // in a cluster: a new PVC or notebook server, never a directory
        )),
      });
      const status = await response.json();
      if (!response.ok) {
        message.className = "message failed";
        message.textContent = status.error || ("request failed: " + response.status);
        startButton.disabled = false;
        return;
      }
      show(status);
      poll(status.request_id);
    });
  }
})();
