"""``rok restore`` takes exactly one target and only the options that target takes: a usage error (exit 2)
before anything is asked of anyone."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from rokcli import cli

URL = "rok://team-a/exp-3mis2/train-3mis2-a1b2?version=k3x9q2mf"
NOWHERE = {"ROK_NATS_URL": "nats://127.0.0.1:1", "ROK_REGISTRY_URL": ""}  # nothing would answer


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "one of --to DIRECTORY, --pvc NAME or --notebook NAME"),
        (["--pvc", "a", "--notebook", "b"], "not --pvc and --notebook together"),
        (["--to", "/tmp/x", "--size", "1Gi"], "--size does not apply to --to"),
        (["--pvc", "a", "--image", "jupyter:1"], "--image does not apply to --pvc"),
        (["--notebook", "a", "--size", "1Gi"], "--size does not apply to --notebook"),
        (["--notebook", "a", "--volume-size", "data"], "'data' is not VOLUME=SIZE"),
        (["--pvc", "a", "--size", "lots"], "'lots' is not a Kubernetes quantity"),
        (["--pvc", "Not_A_Name"], "must be a DNS label"),
        (["--to", "/tmp/x", "--pvc", "a"], "not --to and --pvc together"),
        (["--notebook", "a", "--devices"], "--devices and --keep-setuid apply to a directory (--to) only"),
    ],
)
def test_a_restore_that_names_no_target_or_the_wrong_options_is_a_usage_error(args, says):
    result = CliRunner().invoke(cli, ["restore", URL, *args], env=NOWHERE, prog_name="rok")

    assert result.exit_code == 2, result.output
    assert says in result.output
