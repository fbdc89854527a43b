"""``rok submit`` through the KFP SDK's own client, against a fake KFP API server that speaks the v2beta1 REST
shapes of the SDK's models: the package uploaded as a pipeline and then as new versions of it, the experiment
found or created, the run named with its suffix and started with the inputs given, its id and rok URL printed."""

import sys
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl, kubernetes
from roktesting.kfp_api import FakeKfp

sys.path.insert(0, str(Path(__file__).parents[3] / "tests" / "cli"))
from stack import rok


@dsl.component(base_image="python:3.11")
def double(rows: int) -> int:
    return rows * 2


@dsl.container_component
def shout(message: str):
    return dsl.ContainerSpec(image="alpine:3.20", command=["echo"], args=[message])


@dsl.pipeline(name="doubling")
def doubling(rows: int = 3, label: str = "x") -> None:
    doubled = double(rows=rows)
    kubernetes.mount_pvc(doubled, pvc_name="scratch", mount_path="/scratch")
    shout(message=label).after(doubled)  # a container image: a cluster runs it, this machine would not


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("package") / "doubling.yaml"
    compiler.Compiler().compile(doubling, str(path))
    return path


def submitted(result) -> tuple[str, dict[str, str]]:
    assert result.code == 0, result.err
    first, *links = result.out.splitlines()
    return first, dict(line.split() for line in links)


def test_a_compiled_pipeline_is_uploaded_and_run_in_its_experiment_with_the_inputs_given(fake_kfp: FakeKfp, package):
    first, links = submitted(
        rok(
            "submit",
            str(package),
            "--endpoint",
            fake_kfp.url,
            "--token",
            "kfp-test-token",
            "--experiment",
            "churn",
            "-p",
            "rows=12",
            "--rok-web",
            "http://rok.example/",
        )
    )

    (run,) = fake_kfp.runs.values()
    (experiment,) = fake_kfp.experiments.values()
    (pipeline,) = fake_kfp.pipelines.values()
    ((version_id, uploaded),) = fake_kfp.uploads.items()
    assert experiment.display_name == "churn" and run.experiment_id == experiment.experiment_id
    assert pipeline.display_name == "doubling"
    assert run.pipeline_version_reference.pipeline_version_id == version_id
    assert run.runtime_config.parameters == {"rows": 12}  # typed as the pipeline declares it; label keeps its default
    assert yaml.safe_load_all(uploaded.decode()).__next__()["pipelineInfo"]["name"] == "doubling"
    suffix = run.display_name.removeprefix("doubling-")
    assert len(suffix) == 5 and suffix.isalnum() and suffix.islower()
    assert first == f"run {run.run_id} ({run.display_name}) in experiment churn"
    assert links["kfp"] == f"{fake_kfp.url}/#/runs/details/{run.run_id}"
    assert links["rok"] == f"http://rok.example/search?ns=local&q={run.run_id}"


def test_submitting_again_uploads_a_new_version_and_reuses_the_experiment(fake_kfp: FakeKfp, package, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", fake_kfp.url)
    token = package.parent / "token"
    token.write_text("kfp-test-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))

    for _ in range(2):
        submitted(rok("submit", str(package), "--experiment", "churn"))

    assert len(fake_kfp.pipelines) == 1 and len(fake_kfp.experiments) == 1
    assert len(fake_kfp.versions) == 2
    first, second = fake_kfp.runs.values()
    assert first.pipeline_version_reference.pipeline_version_id != second.pipeline_version_reference.pipeline_version_id
    assert first.display_name != second.display_name
    assert second.display_name in {v.display_name for v in fake_kfp.versions.values()}


def test_a_refused_token_is_one_line_saying_what_to_give(fake_kfp: FakeKfp, package):
    result = rok("submit", str(package), "--endpoint", fake_kfp.url, "--token", "wrong")

    assert result.code == 2
    assert "refused the request (401" in result.err and "--token" in result.err
    assert "Traceback" not in result.err
    assert not fake_kfp.runs


def test_a_wrong_input_is_refused_before_anything_is_uploaded(fake_kfp: FakeKfp, package):
    result = rok("submit", str(package), "--endpoint", fake_kfp.url, "-p", "rows=many")

    assert result.code == 2
    assert "parameter 'rows' is an integer; 'many' is not one" in result.err
    assert fake_kfp.requests == []


def test_rok_s_own_pipeline_file_is_sent_to_rok_run(fake_kfp: FakeKfp, tmp_path):
    own = tmp_path / "pipeline.yaml"
    own.write_text("pipeline: own\nexperiment: x\nvolumes: []\nsteps: []\n")

    result = rok("submit", str(own), "--endpoint", fake_kfp.url)

    assert result.code == 2
    assert "run on this machine with `rok run`" in result.err


def test_a_notebook_is_compiled_and_run_in_its_own_experiment(fake_kfp: FakeKfp, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from notebook_files import cell, write_notebook

    notebook = write_notebook(
        tmp_path / "churn.ipynb",
        [cell("rows = 3", "pipeline-parameters"), cell("data = list(range(rows))", "step:load")],
        pipeline_name="churn-nb",
        experiment_name="churn-trials",
        docker_image="python:3.11-slim",
        volumes=[{"name": "workspace-pvc", "mount_point": "/home/jovyan", "type": "pvc"}],
    )

    first, _ = submitted(rok("submit", str(notebook), "--endpoint", fake_kfp.url, "--token", "kfp-test-token"))

    (run,) = fake_kfp.runs.values()
    (experiment,) = fake_kfp.experiments.values()
    (uploaded,) = fake_kfp.uploads.values()
    spec = next(yaml.safe_load_all(uploaded.decode()))
    assert experiment.display_name == "churn-trials"
    assert set(spec["root"]["dag"]["tasks"]) == {"create-volume-1", "load"}
    assert run.display_name.startswith("churn-nb-") and first.endswith("in experiment churn-trials")
