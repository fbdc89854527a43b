"""``rok compile NOTEBOOK.ipynb``: the notebook as a KFP v2 package built by the KFP SDK, and its step tasks run as
a KFP launcher would run them (the SDK's own placeholder substitution, the container's command in a process
here): variables marshaled through the workspace clone, the Markdown visualization with the step's links."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.local import executor_input_utils, placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[3] / "tests" / "cli"))
from notebook_files import cell, write_notebook
from stack import rok

RUN = "8d3f0c1e-5b7a-4c2e-9f10-2a6b4c8d0e12"


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clones")
    made = {name: root / name for name in ("home", "data")}
    (made["home"] / "project").mkdir(parents=True)
    made["data"].mkdir()
    return made


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, volumes) -> tuple[Path, Path, object]:
    home = volumes["home"]
    notebook = write_notebook(
        home / "project" / "churn.ipynb",
        [
            cell("import math", "imports"),
            cell("def scale(x, by):\n    return [v * by for v in x]", "functions"),
            cell("rows = 4\nrate = 0.5\nverbose = False", "pipeline-parameters"),
            cell("data = list(range(rows))", "step:load_data"),
            cell("total = sum(scale(data, rate))", "step:train", "prev:load_data"),
            cell("half = len(data) // 2", "step:split", "prev:load_data"),
            cell(
                "summary = (total, half, math.pi > 3, verbose)\nprint(summary)",
                "step:report",
                "prev:train",
                "prev:split",
            ),
        ],
        pipeline_name="churn-nb",
        experiment_name="churn",
        docker_image="python:3.11-slim",
        volumes=[
            {"name": "workspace-pvc", "mount_point": str(home), "type": "pvc"},
            {"name": "data-pvc", "mount_point": str(volumes["data"]), "type": "pvc"},
        ],
    )
    package = home.parent / "pipeline.yaml"
    result = rok(
        "compile", str(notebook), "-o", str(package), "--rok-web", "http://rok.example/", "--rok-image", "rok:9"
    )
    assert result.code == 0, result.err
    assert result.out.strip() == f"compiled churn-nb: 4 steps into {package}"
    spec, platform = list(yaml.safe_load_all(package.read_text()))
    return package, notebook, (spec, platform["platforms"]["kubernetes"])


def test_one_task_per_step_after_its_prev_steps_and_the_volume_clones(compiled):
    _, _, (spec, _) = compiled
    tasks = spec["root"]["dag"]["tasks"]

    assert set(tasks) == {"create-volume-1", "create-volume-2", "load-data", "train", "split", "report"}
    assert set(tasks["report"]["dependentTasks"]) == {"create-volume-1", "create-volume-2", "train", "split"}
    assert set(tasks["train"]["dependentTasks"]) == {"create-volume-1", "create-volume-2", "load-data"}
    assert tasks["load-data"]["taskInfo"]["name"] == "load_data"
    assert all(task["cachingOptions"] == {} for task in tasks.values())  # no run reuses another's snapshots
    assert spec["pipelineInfo"]["name"] == "churn-nb"
    assert spec["root"]["inputDefinitions"]["parameters"] == {
        "rows": {"defaultValue": 4.0, "isOptional": True, "parameterType": "NUMBER_INTEGER"},
        "rate": {"defaultValue": 0.5, "isOptional": True, "parameterType": "NUMBER_DOUBLE"},
        "verbose": {"defaultValue": False, "isOptional": True, "parameterType": "BOOLEAN"},
    }


def test_every_step_runs_in_the_notebook_image_mounting_each_clone_at_its_mount_point(compiled, volumes):
    _, _, (spec, platform) = compiled
    executors = spec["deploymentSpec"]["executors"]

    for task in ("load-data", "train", "split", "report"):
        assert executors[f"exec-{task}"]["container"]["image"] == "python:3.11-slim"
        mounts = platform["deploymentSpec"]["executors"][f"exec-{task}"]["pvcMount"]
        assert [(m["mountPath"], m["taskOutputParameter"]["producerTask"]) for m in mounts] == [
            (str(volumes["home"]), "create-volume-1"),
            (str(volumes["data"]), "create-volume-2"),
        ]
    clone = executors["exec-create-volume-2"]["container"]
    assert clone["image"] == "rok:9"
    assert clone["command"] == ["rok", "clone-pvc"]
    assert clone["args"][:3] == ["data-pvc", "--run", "{{$.pipeline_job_uuid}}"]


def run_task(spec: dict, task: str, arguments: dict, root: Path) -> subprocess.CompletedProcess:
    """Run ``task``'s container command here as KFP's launcher would: its placeholders replaced by the SDK's own
    substitution (``kfp.local``), python3 being this interpreter."""
    pipeline = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    component = pipeline.components[pipeline.root.dag.tasks[task].component_ref.name]
    container = spec["deploymentSpec"]["executors"][component.executor_label]["container"]
    task_root = str(root / task)
    executor_input = executor_input_utils.construct_executor_input(component, arguments, task_root, False)
    command = placeholder_utils.replace_placeholders(
        full_command=[*container["command"], *container["args"]],
        executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component),
        pipeline_resource_name="churn-nb",
        task_resource_name=task,
        pipeline_root=str(root),
        unique_pipeline_id=RUN,
    )
    assert command[0] == "python3"
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=60)


def test_the_step_tasks_marshal_through_the_workspace_and_write_their_snapshot_links(compiled, volumes, tmp_path):
    _, _, (spec, _) = compiled
    given = {"rows": 6, "rate": 2.0, "verbose": True}  # a run's values, not the defaults
    for task in ("load-data", "train", "split", "report"):
        done = run_task(spec, task, given, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

    marshal = volumes["home"] / ".rok" / "marshal" / RUN
    assert {p.name for p in marshal.iterdir()} >= {"load_data", "train", "split", "report", "report.ipynb"}
    assert "(30.0, 3, True, True)" in json.dumps(json.loads((marshal / "report.ipynb").read_text()))
    markdown = (tmp_path / "report" / "rok").read_text()
    assert markdown.startswith("## rok: step report")
    assert f"[before-snapshot](http://rok.example/steps?ns=&run={RUN}&step=report&phase=before)" in markdown
    assert f"[after-snapshot](http://rok.example/steps?ns=&run={RUN}&step=report&phase=after)" in markdown


def test_a_notebook_without_an_image_is_refused_saying_where_to_set_one(tmp_path):
    notebook = write_notebook(
        tmp_path / "bare.ipynb",
        [cell("x = 1", "step:only")],
        volumes=[{"name": "ws", "mount_point": "/home/jovyan", "type": "pvc"}],
    )

    result = rok("compile", str(notebook), "-o", str(tmp_path / "out.yaml"))

    assert result.code == 2
    assert "no image for the steps: set docker_image" in result.err and "--image" in result.err
    assert not (tmp_path / "out.yaml").exists()


def test_the_clone_tasks_name_the_notebook_pod_and_the_registry_when_compiled_in_a_notebook_server(
    tmp_path, monkeypatch
):
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [cell("x = 1", "step:only")],
        pipeline_name="one",
        docker_image="python:3.11-slim",
        volumes=[{"name": "ws", "mount_point": "/home/jovyan", "type": "pvc"}],
    )
    package = tmp_path / "pipeline.yaml"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a notebook server's pod
    monkeypatch.setenv("HOSTNAME", "my-notebook-0")
    monkeypatch.delenv("ROK_NOTEBOOK_POD", raising=False)
    result = rok("compile", str(notebook), "-o", str(package), "--rok-registry", "http://rok-registry.rok:8470")
    assert result.code == 0, result.err

    spec, platform = list(yaml.safe_load_all(package.read_text()))
    clone_task = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-create-volume-1"]
    assert clone_task["podMetadata"]["annotations"] == {"rok/notebook-pod": "my-notebook-0"}
    env_of = spec["deploymentSpec"]["executors"]["exec-create-volume-1"]["container"]["env"]
    assert env_of == [{"name": "ROK_REGISTRY_URL", "value": "http://rok-registry.rok:8470"}]


def test_an_sdk_pipeline_with_clones_mounts_them_in_every_task_it_defines(tmp_path):
    from kfp import compiler, dsl
    from rok_pipeline_watcher.kfp.clones import with_clones

    @dsl.component(base_image="python:3.11-slim")
    def prepare(rows: int) -> int:
        return rows

    @dsl.component(base_image="python:3.11-slim")
    def train(rows: int) -> None:
        print(rows)

    @dsl.pipeline(name="churn")
    @with_clones({"workspace-nb-1": "/home/jovyan", "data-nb-1": "/data"}, notebook_pod="nb-1-0", rok_image="rok:9")
    def churn(rows: int = 4) -> None:
        prepared = prepare(rows=rows)
        train(rows=prepared.output)

    package = tmp_path / "churn.yaml"
    compiler.Compiler().compile(churn, str(package))
    spec, platform = list(yaml.safe_load_all(package.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]

    assert set(tasks) == {"create-volume-1", "create-volume-2", "prepare", "train"}
    for task in ("prepare", "train"):
        mounts = executors[f"exec-{task}"]["pvcMount"]
        assert [(m["mountPath"], m["taskOutputParameter"]["producerTask"]) for m in mounts] == [
            ("/home/jovyan", "create-volume-1"),
            ("/data", "create-volume-2"),
        ]
        assert {"create-volume-1", "create-volume-2"} <= set(tasks[task]["dependentTasks"])
    clone = spec["deploymentSpec"]["executors"]["exec-create-volume-1"]["container"]
    assert clone["command"] == ["rok", "clone-pvc"] and clone["args"][0] == "workspace-nb-1"
    assert executors["exec-create-volume-2"]["podMetadata"]["annotations"] == {"rok/notebook-pod": "nb-1-0"}
