"""``rokcli`` without its ``mount`` extra (the ``rok`` image, where the create-volume tasks run ``rok clone-pvc``):
every command but ``rok mount`` works and never imports pyfuse3, and ``rok mount`` says what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# pyfuse3 cannot be imported, as where rokcli was installed without [mount]; then the command runs as `rok`
WITHOUT_FUSE = textwrap.dedent(
    """
    import sys
    sys.modules["pyfuse3"] = None
    from rokcli import main
    sys.argv = ["rok", *sys.argv[1:]]
    try:
        main()
    finally:
        print("pyfuse3 imported" if sys.modules.get("pyfuse3") is not None else "pyfuse3 not imported", file=sys.stderr)
    """
)


def _rok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_FUSE, *args], capture_output=True, text=True, timeout=60)


def test_the_commands_a_create_volume_task_runs_need_no_fuse() -> None:
    for args in (["--help"], ["clone-pvc", "--help"]):  # --help loads every command
        done = _rok(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Usage: rok" in done.stdout
        assert "pyfuse3 not imported" in done.stderr


def test_rok_mount_without_pyfuse3_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "mnt"
    empty.mkdir()
    done = _rok("mount", "rok://team-a/exp-1/run-1?version=k3x9q2mf", str(empty))
    assert done.returncode != 0
    assert "rok mount needs pyfuse3, which is not installed: pip install 'rokcli[mount]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(empty.iterdir())
