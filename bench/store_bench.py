"""rok's store engine against restic (local disk and loopback S3) and borg (local disk).

Run: ``uv run python bench/store_bench.py [--size 1GiB] [--backend file|s3|both] [--runs 3] [--workdir DIR]``.
Measures initial snapshot, unchanged re-snapshot, small-change re-snapshot, restore, repository size, peak
RSS and CPU time (user + system) of each tool's process, and on S3 the CPU time the S3 server spent meanwhile
(the two share the machine's cores: together they bound how fast a phase can be), and prints a table per
backend: the median of each figure over the runs, its spread (min–max) and peer/rok ratios of the medians.
Every tool runs as a child process and is timed from its start to its exit. restic gets a password
(RESTIC_PASSWORD, its repositories are always encrypted) and its default compression; borg runs with
``--encryption none`` and its default (lz4).

Beside them, ``tar`` is the same work done by the operating system's own tools under the same page-cache
conditions, on local disk, with no chunking, hashing or dedup: read every file and compress it once
(``tar | zstd -T0``), stat every entry for a re-snapshot (``find -printf``; the small change also reads the two
changed files), and extract that archive (``zstd -d | tar -x``). Where rok is level with it, a phase is at what
this machine's disk and cores do. ``rok start`` is what a fresh rok process pays before its first step, with the
page cache dropped: the interpreter and the modules a snapshot imports (on S3 with the S3 client library).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dataset
from roktesting.s3 import serve_s3

ROOT = Path(__file__).resolve().parent.parent
ROK = [str(ROOT / ".venv" / "bin" / "rok")]
PHASES = ["initial", "unchanged", "small change", "restore"]


@dataclass
class Result:
    seconds: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)  # KiB
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU (user + system) of the tool's process
    server_cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU of the S3 server meanwhile
    repo_bytes: int = 0
    start: float = 0.0  # rok only: seconds a fresh process takes to import what a snapshot needs, cache dropped


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, int, float]:
    """(seconds, peak RSS in KiB, CPU seconds) of a child process; raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err.decode()[-2000:]} {out.decode()[-500:]}")
    return seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far; 0 when there is none."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def du(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def drop_caches() -> None:
    with contextlib.suppress(OSError):
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Tool:
    name = ""

    def __init__(self, work: Path, backend: str, env: dict[str, str], s3_root: Path | None) -> None:
        self.work = work / f"{self.name}-{backend}"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.backend = backend
        self.env = {**os.environ, **env}
        self.s3_root = s3_root
        self.bucket = f"{self.name}-{secrets.token_hex(3)}"

    def init(self) -> None:
        raise NotImplementedError

    def snapshot(self, data: Path) -> tuple[float, int, float]:
        raise NotImplementedError

    def restore(self, target: Path) -> tuple[float, int, float]:
        raise NotImplementedError

    def repo_bytes(self) -> int:
        if self.backend == "s3":
            assert self.s3_root is not None
            return du(self.s3_root / self.bucket)
        return du(self.work / "repo")


class Rok(Tool):
    name = "rok"

    def __init__(self, *a: object) -> None:
        super().__init__(*a)  # type: ignore[arg-type]
        self.url = f"s3://{self.bucket}/repo" if self.backend == "s3" else f"file://{self.work / 'repo'}"
        self.env["ROK_CACHE_DIR"] = str(self.work / "cache")

    def init(self) -> None:
        run([*ROK, "repo", "init", "--repo", self.url], self.env)

    def snapshot(self, data: Path) -> tuple[float, int, float]:
        return run([*ROK, "snapshot", "create", str(data), "--repo", self.url, "--json"], self.env)

    def restore(self, target: Path) -> tuple[float, int, float]:
        ids = subprocess.run(
            [*ROK, "snapshot", "ls", "--repo", self.url, "--json"], env=self.env, capture_output=True, check=True
        ).stdout
        import json

        latest = json.loads(ids)[-1]["id"]
        return run([*ROK, "snapshot", "restore", latest, "--repo", self.url, "--to", str(target), "--json"], self.env)

    def start(self) -> float:
        """Seconds for the interpreter to import what ``rok snapshot create`` imports, page cache dropped."""
        modules = "rokcli, rokstore" + (", aiobotocore.session, botocore.config" if self.backend == "s3" else "")
        drop_caches()
        seconds, _, _ = run([str(ROOT / ".venv" / "bin" / "python"), "-c", f"import {modules}"], self.env)
        return seconds


class Restic(Tool):
    name = "restic"

    def __init__(self, *a: object) -> None:
        super().__init__(*a)  # type: ignore[arg-type]
        if self.backend == "s3":
            self.url = f"s3:{self.env['AWS_ENDPOINT_URL']}/{self.bucket}/repo"
        else:
            self.url = str(self.work / "repo")
        self.env["RESTIC_PASSWORD"] = "bench-password"
        self.env["RESTIC_CACHE_DIR"] = str(self.work / "cache")

    def init(self) -> None:
        if self.backend == "s3":
            assert self.s3_root is not None
            (self.s3_root / self.bucket).mkdir()
        run(["restic", "-r", self.url, "init"], self.env)

    def snapshot(self, data: Path) -> tuple[float, int, float]:
        return run(["restic", "-r", self.url, "backup", "--quiet", str(data)], self.env)

    def restore(self, target: Path) -> tuple[float, int, float]:
        return run(["restic", "-r", self.url, "restore", "latest", "--target", str(target)], self.env)


class Borg(Tool):
    name = "borg"

    def __init__(self, *a: object) -> None:
        super().__init__(*a)  # type: ignore[arg-type]
        self.n = 0
        self.env["BORG_BASE_DIR"] = str(self.work / "home")
        self.env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"

    def init(self) -> None:
        run(["borg", "init", "--encryption", "none", str(self.work / "repo")], self.env)

    def snapshot(self, data: Path) -> tuple[float, int, float]:
        self.n += 1
        return run(["borg", "create", f"{self.work / 'repo'}::s{self.n}", "."], self.env, cwd=data)

    def restore(self, target: Path) -> tuple[float, int, float]:
        target.mkdir(parents=True)
        return run(["borg", "extract", f"{self.work / 'repo'}::s{self.n}"], self.env, cwd=target)


class Tar(Tool):
    """Each phase's work done with the system's tools, without dedup: see the module's docstring."""

    name = "tar"

    def __init__(self, *a: object) -> None:
        super().__init__(*a)  # type: ignore[arg-type]
        self.archive = self.work / "data.tar.zst"
        self.snapshots = 0
        self.changed: list[Path] = []  # what the small change touched: read again

    def init(self) -> None:
        pass

    def snapshot(self, data: Path) -> tuple[float, int, float]:
        self.snapshots += 1
        if self.snapshots == 1:
            return sh(f"tar -cf - -C {data} . | zstd -q -T0 -3 -f -o {self.archive}", self.env)
        read = "".join(f" && cat {p} >/dev/null" for p in self.changed)
        return sh(f"find {data} -printf '%i %s %T@ %C@\\n' >/dev/null{read}", self.env)

    def restore(self, target: Path) -> tuple[float, int, float]:
        target.mkdir(parents=True)
        return sh(f"zstd -q -d -c {self.archive} | tar -xf - -C {target}", self.env)

    def repo_bytes(self) -> int:
        return self.archive.stat().st_size


def sh(script: str, env: dict[str, str]) -> tuple[float, int, float]:
    return run(["bash", "-o", "pipefail", "-c", script], env)


def bench_backend(backend: str, data: Path, work: Path) -> dict[str, Result]:
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        s3_root = None
        server_pid = 0
        if backend == "s3":
            s3_root = work / "s3-root"
            shutil.rmtree(s3_root, ignore_errors=True)
            s3_root.mkdir(parents=True)
            server = stack.enter_context(serve_s3(s3_root))
            env, server_pid = server.env(), server.pid
        kinds: list[type[Tool]] = [Rok, Restic] + ([Borg] if backend == "file" else []) + [Tar]
        tools = [k(work, backend, env, s3_root) for k in kinds]
        results = {t.name: Result() for t in tools}

        def measure(t: Tool, phase: str, step: Callable[[], tuple[float, int, float]]) -> None:
            server_before = process_cpu(server_pid)
            result = results[t.name]
            result.seconds[phase], result.rss[phase], result.cpu[phase] = step()
            result.server_cpu[phase] = process_cpu(server_pid) - server_before
            print(f"  {backend} {t.name} {phase}: {result.seconds[phase]:.2f}s", file=sys.stderr)

        for t in tools:
            t.init()
        for phase in ("initial", "unchanged"):
            for t in tools:
                if phase == "initial":
                    drop_caches()
                measure(t, phase, functools.partial(t.snapshot, data))
        changed = dataset.small_change(data)
        for t in tools:
            if isinstance(t, Tar):
                t.changed = changed
            measure(t, "small change", functools.partial(t.snapshot, data))
        for t in tools:
            target = work / f"restore-{t.name}-{backend}"
            shutil.rmtree(target, ignore_errors=True)
            drop_caches()
            measure(t, "restore", functools.partial(t.restore, target))
            shutil.rmtree(target, ignore_errors=True)
        for t in tools:
            results[t.name].repo_bytes = t.repo_bytes()
            if isinstance(t, Rok):
                results[t.name].start = t.start()
        return results


def table(backend: str, runs: list[dict[str, Result]]) -> str:
    """Medians over the runs, each with its spread, and the peers' medians over rok's."""
    names = list(runs[0])
    peers = [n for n in names if n != "rok"]

    def figures(name: str, value: Callable[[Result], float]) -> tuple[float, float, float]:
        values = [value(run[name]) for run in runs]
        return statistics.median(values), min(values), max(values)

    def cell(med: float, low: float, high: float, digits: int) -> str:
        return f"{med:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"

    head = f"{'backend ' + backend + f', {len(runs)} runs':<24}{'rok':>22}" + "".join(
        f"{p:>22}{p + '/rok':>12}" for p in peers
    )
    lines = [head, "-" * len(head)]
    Row = tuple[str, Callable[[Result], float], int]

    def phase_rows(label: str, of: Callable[[Result], dict[str, float]]) -> list[Row]:
        def row(phase: str) -> Row:
            return label.format(phase), lambda r: of(r)[phase], 2

        return [row(phase) for phase in PHASES]

    rows: list[Row] = [
        *phase_rows("{} (s)", lambda r: r.seconds),
        ("repo size (MiB)", lambda r: r.repo_bytes / 2**20, 1),
        ("peak RSS (MiB)", lambda r: max(r.rss.values()) / 1024, 1),
        *phase_rows("{} CPU (s)", lambda r: r.cpu),
    ]
    if backend == "s3":
        rows += phase_rows("{} server CPU", lambda r: r.server_cpu)
    for label, value, digits in rows:
        rok = figures("rok", value)
        row = f"{label:<24}{cell(*rok, digits):>22}"
        for p in peers:
            peer = figures(p, value)
            ratio = peer[0] / rok[0] if rok[0] else float("nan")
            row += f"{cell(*peer, digits):>22}{ratio:>11.2f}x"
        lines.append(row)
    lines.append(f"{'rok start (s)':<24}{cell(*figures('rok', lambda r: r.start), 2):>22}")
    return "\n".join(lines)


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def compile_bytecode() -> None:
    """Compile rok's and its dependencies' modules once, as the images do (UV_COMPILE_BYTECODE): with
    PYTHONDONTWRITEBYTECODE set and no .pyc files, every rok process would compile botocore from source (~0.5 s)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    targets = [str(p) for p in (site, ROOT / "libs", ROOT / "services") if p.exists()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "2", *targets], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="data set size (default 1GiB)")
    parser.add_argument("--backend", choices=["file", "s3", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3, help="runs per backend; the table shows medians (default 3)")
    parser.add_argument("--workdir", default="/tmp/rok-bench", help="scratch directory on the disk to measure")
    args = parser.parse_args()
    missing = [t for t in ("restic", "borg", "zstd") if shutil.which(t) is None]
    if missing:
        sys.exit(f"{', '.join(missing)} not found: apt-get install -y restic borgbackup zstd")
    compile_bytecode()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size = parse_size(args.size)
    data = work / f"data-{size}"
    print(f"building data set in {data} ...", file=sys.stderr)
    counts = dataset.build(data, size)
    backends = ["file", "s3"] if args.backend == "both" else [args.backend]
    out = [
        f"data set: {counts['files']} files, {counts['bytes'] / 2**20:.0f} MiB "
        f"(site-packages copy + random, weight-like and CSV files); {os.cpu_count()} CPUs",
        "restic: default compression (auto), RESTIC_PASSWORD set (restic always encrypts); "
        "borg: --encryption none, default lz4; page cache dropped before initial snapshots and restores",
        "tar: the same work with tar | zstd -T0, find and zstd -d | tar -x on local disk, no dedup (module docstring)",
    ]
    for backend in backends:
        runs = []
        for number in range(args.runs):
            # every run starts from the same data: rebuild after the small change of the previous run
            shutil.rmtree(data)
            dataset.build(data, size)
            print(f"{backend}: run {number + 1} of {args.runs}", file=sys.stderr)
            runs.append(bench_backend(backend, data, work))
        out.append("")
        out.append(table(backend, runs))
    print("\n".join(out))


if __name__ == "__main__":
    main()
