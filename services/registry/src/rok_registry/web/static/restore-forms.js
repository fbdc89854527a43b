// rok restore forms: ask the API for a restore into a new notebook server or PVC and follow it by its id;
// the version picker, opened from a form, fills that form with the version chosen.
"use strict";

(() => {
  const picker = document.getElementById("picker");
  if (picker && window.opener && window.opener !== window) {
    // opened from a form: choosing a version fills the form and closes the picker
    picker.addEventListener("click", (event) => {
      const link = event.target.closest("a.choose");
      if (!link) return;
      event.preventDefault();
      window.opener.postMessage({ rokPicked: link.dataset.url }, window.location.origin);
      window.close();
    });
    return;
  }

  const form = document.querySelector("form.restore-form");
  if (!form) return;
  const kind = form.dataset.kind;
  const message = document.getElementById("form-message");
  const progressBox = document.getElementById("form-progress");
  const bar = document.getElementById("form-bar");
  const stateText = document.getElementById("form-state");
  const start = document.getElementById("form-start");

  for (const link of form.querySelectorAll("a.pick")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      window.open(link.href, "rok-picker", "popup,width=900,height=700");
    });
  }
  window.addEventListener("message", (event) => {
    if (event.origin !== window.location.origin || !event.data || !event.data.rokPicked) return;
    window.location.assign(`/restore/${kind}?url=${encodeURIComponent(event.data.rokPicked)}`);
  });

  const sizeBox = document.getElementById("pvc-size");
  const accessBox = document.getElementById("pvc-access-mode");
  const chooseVolume = () => {
    const radio = form.querySelector("input[name=volume]:checked");
    if (!radio || !sizeBox) return;
    sizeBox.value = radio.dataset.size;
    if (radio.dataset.accessMode) accessBox.value = radio.dataset.accessMode;
  };
  for (const radio of form.querySelectorAll("input[type=radio][name=volume]")) {
    radio.addEventListener("change", chooseVolume);
  }
  chooseVolume();

  const body = () => {
    const data = new FormData(form);
    const asked = { url: data.get("url"), kind, target: (data.get("target") || "").trim() };
    const storageClass = (data.get("storage_class") || "").trim();
    if (storageClass) asked.storage_class = storageClass;
    if (kind === "pvc") {
      asked.volumes = [data.get("volume")];
      asked.size = (data.get("size") || "").trim() || null;
      asked.access_mode = data.get("access_mode");
    } else {
      asked.volumes = data.getAll("volume");
      const image = (data.get("image") || "").trim();
      if (image) asked.image = image;
      asked.sizes = {};
      for (const box of form.querySelectorAll("input[name=size]")) {
        if (asked.volumes.includes(box.dataset.volume) && box.value.trim()) {
          asked.sizes[box.dataset.volume] = box.value.trim();
        }
      }
    }
    return asked;
  };

  const show = (state) => {
    progressBox.hidden = false;
    bar.max = state.bytes_total || 1;
    bar.value = state.bytes_done || 0;
    stateText.textContent = state.state;
    if (state.state === "completed") {
      const where = (state.volumes || []).map((v) => `${v.name} → ${v.location}`).join(", ");
      message.textContent = `Restored into ${state.target}: ${where}`;
    } else if (state.state === "failed") {
      message.textContent = `The restore failed: ${state.reason}`;
    } else if (state.state === "requested") {
      message.textContent = "Waiting for a restorer to take the request…";
    } else {
      message.textContent = "Restoring…";
    }
  };

  const follow = async (requestId) => {
    for (;;) {
      const response = await fetch(`/api/v1/restores/${encodeURIComponent(requestId)}`);
      const state = await response.json();
      if (!response.ok) {
        message.textContent = state.error ? state.error.message : `the registry answered ${response.status}`;
        return;
      }
      show(state);
      if (state.state === "completed" || state.state === "failed") return;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    start.disabled = true;
    message.textContent = "";
    try {
      const response = await fetch("/api/v1/restores", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body()),
      });
      const answer = await response.json();
      if (!response.ok) {
        message.textContent = answer.error ? answer.error.message : `the registry answered ${response.status}`;
        return;
      }
      form.dataset.requestId = answer.request_id;
      show(answer);
      await follow(answer.request_id);
    } finally {
      start.disabled = false;
    }
  });
})();
