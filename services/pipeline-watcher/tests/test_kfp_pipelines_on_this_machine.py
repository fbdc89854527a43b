"""What ``rok run`` reads of a pipeline compiled by the KFP SDK, before anything runs: the tasks as steps, the
PVCs mapped to directories, the inputs typed, and what this machine cannot run refused by the task's name."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import compiler, dsl, kubernetes
from rok_pipeline_watcher.kfp import mounts
from rok_pipeline_watcher.kfp.local import load_any, mount_points
from rok_pipeline_watcher.runner.pipeline import PipelineError, load


@dsl.component(base_image="python:3.11")
def count(rows: int, table: dsl.Output[dsl.Dataset]) -> int:
    return rows


@dsl.component(base_image="python:3.11")
def report(table: dsl.Input[dsl.Dataset], rows: int, ratio: float, verbose: bool) -> str:
    return ""


@dsl.container_component
def shout(message: str):
    return dsl.ContainerSpec(image="alpine:3.20", command=["echo"], args=[message])


@dsl.pipeline(name="counting")
def counting(rows: int = 3, ratio: float = 0.5, verbose: bool = False) -> None:
    counted = count(rows=rows)
    kubernetes.mount_pvc(counted, pvc_name="scratch", mount_path="/scratch")
    reported = report(table=counted.outputs["table"], rows=counted.outputs["Output"], ratio=ratio, verbose=verbose)
    kubernetes.mount_pvc(reported, pvc_name="models", mount_path="/models")


@dsl.pipeline(name="mixed")
def mixed() -> None:
    counted = count(rows=1)
    shout(message="hello").after(counted)


@dsl.pipeline(name="creates-its-volume")
def creates_its_volume() -> None:
    volume = kubernetes.CreatePVC(pvc_name_suffix="-work", access_modes=["ReadWriteOnce"], size="1Gi")
    counted = count(rows=1)
    kubernetes.mount_pvc(counted, pvc_name=volume.outputs["name"], mount_path="/work")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compiled")
    files = {}
    for pipeline in (counting, mixed, creates_its_volume):
        files[pipeline.name] = root / f"{pipeline.name}.yaml"
        compiler.Compiler().compile(pipeline, str(files[pipeline.name]))
    return files


def directories(tmp_path: Path, *names: str) -> list[str]:
    for name in names:
        (tmp_path / name).mkdir()
    return [f"{name}={tmp_path / name}" for name in names]


def test_each_task_is_a_step_after_the_tasks_it_reads_from_with_the_inputs_typed(compiled, tmp_path):
    pipeline = load_any(
        compiled["counting"],
        volumes=directories(tmp_path, "scratch", "models"),
        parameters=["rows=7", "verbose=true"],
        loader=load,
    )

    assert pipeline.pipeline == "counting"
    assert [(v.name, v.path) for v in pipeline.volumes] == [
        ("scratch", tmp_path / "scratch"),
        ("models", tmp_path / "models"),
    ]
    assert [(s.name, s.after) for s in pipeline.order()] == [("count", ()), ("report", ("count",))]
    command = shlex.split(pipeline.step("report").run)
    # the task runs in a mount namespace of its own, with the clone of its PVC at its mount path
    wrapper, task = command[: command.index("--")], command[command.index("--") + 1 :]
    assert wrapper[-3:] == [str(Path(mounts.__file__)), "--bind", "models=/models"]
    assert task[1:5] == ["-m", "rok_pipeline_watcher.kfp.launch", str(compiled["counting"]), "report"]
    assert json.loads(command[command.index("--arguments") + 1]) == {"rows": 7, "ratio": 0.5, "verbose": True}


def test_a_container_component_is_refused_by_name_before_the_run_saying_what_to_do(compiled, tmp_path):
    with pytest.raises(PipelineError) as refused:
        load_any(compiled["mixed"], volumes=directories(tmp_path, "work"), parameters=[], loader=load)

    message = str(refused.value)
    assert "task 'shout' runs the container image 'alpine:3.20'" in message
    assert "@dsl.component" in message and "rok submit" in message


def test_a_pvc_the_pipeline_creates_is_refused_naming_the_task(compiled, tmp_path):
    with pytest.raises(PipelineError, match="task 'createpvc' creates or deletes a PVC"):
        load_any(compiled["creates-its-volume"], volumes=directories(tmp_path, "work"), parameters=[], loader=load)


def test_a_mounted_pvc_without_a_directory_is_named_with_the_tasks_that_mount_it(compiled, tmp_path):
    with pytest.raises(PipelineError, match=r"PVC 'models' \(mounted by report\) is mapped to no directory"):
        load_any(compiled["counting"], volumes=directories(tmp_path, "scratch"), parameters=[], loader=load)


def test_a_mount_path_inside_another_pvcs_must_be_in_that_pvcs_directory_and_is_never_created(tmp_path):
    mnt = tmp_path / "mnt"

    @dsl.pipeline(name="nested")
    def nested() -> None:
        counted = count(rows=1)
        kubernetes.mount_pvc(counted, pvc_name="data", mount_path=f"{mnt}/data")
        kubernetes.mount_pvc(counted, pvc_name="models", mount_path=f"{mnt}/data/models")

    compiled = tmp_path / "nested.yaml"
    compiler.Compiler().compile(nested, str(compiled))
    volumes = directories(tmp_path, "data", "models")
    with pytest.raises(PipelineError) as refused:
        load_any(compiled, volumes=volumes, parameters=[], loader=load)
    assert (
        f"task 'count' mounts PVC 'models' at {mnt}/data/models, inside {mnt}/data where it mounts PVC 'data', "
        f"but that PVC's directory has no models: create {tmp_path / 'data' / 'models'}"
    ) in str(refused.value)

    (tmp_path / "data" / "models").mkdir()
    pipeline = load_any(compiled, volumes=volumes, parameters=[], loader=load)
    command = shlex.split(pipeline.step("count").run)
    binds = [command[i + 1] for i, part in enumerate(command[: command.index("--")]) if part == "--bind"]
    assert sorted(binds) == [f"data={mnt}/data", f"models={mnt}/data/models"]
    (tmp_path / "models" / "model.json").write_text("fitted")
    with mount_points(compiled) as created:  # the outer one only: the inner one is the PVC's
        assert created == [mnt, mnt / "data"]
        # the outer PVC is mounted first, the inner one then at its directory inside it
        read = [sys.executable, "-c", f"print(open('{mnt}/data/models/model.json').read())"]
        env = {**os.environ, "ROK_VOLUME_DATA": str(tmp_path / "data"), "ROK_VOLUME_MODELS": str(tmp_path / "models")}
        done = subprocess.run([*command[: command.index("--") + 1], *read], env=env, capture_output=True, text=True)
        assert (done.returncode, done.stdout) == (0, "fitted\n"), done.stderr
    assert not mnt.exists()


def test_a_mount_path_two_runs_use_is_removed_by_the_last_one_and_never_with_what_someone_put_there(tmp_path):
    mnt = tmp_path / "mnt"

    @dsl.pipeline(name="shared")
    def shared() -> None:
        kubernetes.mount_pvc(count(rows=1), pvc_name="data", mount_path=f"{mnt}/data")

    compiled = tmp_path / "shared.yaml"
    compiler.Compiler().compile(shared, str(compiled))
    first, second = mount_points(compiled), mount_points(compiled)

    assert first.__enter__() == [mnt, mnt / "data"]
    assert second.__enter__() == []  # rok made them for the first run, which still goes
    first.__exit__(None, None, None)
    assert (mnt / "data").is_dir()  # the second run still mounts it
    second.__exit__(None, None, None)
    assert not mnt.exists()  # the last run removed what rok made

    with mount_points(compiled):
        (mnt / "notes.txt").write_text("mine")
    assert (mnt / "notes.txt").read_text() == "mine"
    assert not (mnt / "data").exists()


@pytest.mark.parametrize(
    ("parameter", "problem"),
    [
        ("rows=seven", "parameter 'rows' is an integer; 'seven' is not one"),
        ("verbose=perhaps", "parameter 'verbose' is a boolean"),
        ("epochs=3", "the pipeline has no parameter 'epochs' (its parameters: ratio, rows, verbose)"),
        ("rows", "-p 'rows': expected NAME=VALUE"),
    ],
)
def test_a_wrong_input_is_refused_naming_it(compiled, tmp_path, parameter, problem):
    with pytest.raises(PipelineError) as refused:
        load_any(
            compiled["counting"],
            volumes=directories(tmp_path, "scratch", "models"),
            parameters=[parameter],
            loader=load,
        )
    assert problem in str(refused.value)


def test_rok_s_own_pipeline_file_still_loads_and_takes_no_kfp_options(tmp_path):
    (tmp_path / "home").mkdir()
    own = tmp_path / "pipeline.yaml"
    own.write_text(
        "pipeline: own\nexperiment: trials\nvolumes:\n  - name: workspace\n    path: ./home\n"
        "steps:\n  - name: hello\n    run: echo hello\n"
    )

    assert load_any(own, volumes=[], parameters=[], loader=load).steps[0].run == "echo hello"
    with pytest.raises(PipelineError, match="-p and --volume are for notebooks and pipelines compiled by the KFP SDK"):
        load_any(own, volumes=[f"home={tmp_path / 'home'}"], parameters=[], loader=load)
