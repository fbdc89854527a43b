"""``rok submit`` through the KFP SDK's own client, against a fake KFP API server that speaks the v2beta1 REST
shapes of the SDK's models, and a real registry (its HTTP app on SQLite): the experiment's bucket asked of the
registry first, the package uploaded as a pipeline and then as new versions of it, the KFP experiment named as the
bucket, the run and version with the bucket's suffix, the run started with the inputs given, its id and rok URL
printed; the registry then records the run in that bucket, under a name with the same suffix."""

import asyncio
import sys
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kfp import compiler, dsl, kubernetes
from rok_registry.api import create_app
from rok_registry.database import Database
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.authz import LocalAccess
from rokcommon.events import RunRef, RunStarted, VolumeRef
from rokcommon.registry_contract import Bucket, ListBuckets, ListFiles, RunFile
from roktesting.kfp_api import FakeKfp
from roktesting.ports import free_port

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


REGISTRY_TOKEN = "registry-test-token"
T = TypeVar("T")


class RegistryThread:
    """The registry's HTTP app on a SQLite file, served from a thread of its own (``rok`` runs in the test's)."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.db = Database(f"sqlite:///{root / 'registry.db'}")
        self.recorder, self.queries = Recorder(self.db), Queries(self.db)
        app = create_app(self.queries, gate=Gate(LocalAccess(REGISTRY_TOKEN)), recorder=self.recorder)
        self.http = HttpServer(app, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.loop.run_forever, name="registry", daemon=True)

    def __enter__(self) -> "RegistryThread":
        self.thread.start()
        self.call(self.db.migrate())
        self.call(self.http.start())
        return self

    def __exit__(self, *_: object) -> None:
        self.call(self.http.stop())
        self.call(self.db.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(30)

    @property
    def url(self) -> str:
        return self.http.url

    def buckets(self, namespace: str = "local") -> list[Bucket]:
        return list(self.call(self.queries.buckets(ListBuckets(namespace=namespace))).items)

    def record_start(self, *, run_id: str, run_name: str, experiment: str, namespace: str = "local") -> RunFile:
        """Record the run's ``RunStarted`` as the watcher sends it from KFP, and answer the run's file."""
        ref = RunRef(namespace=namespace, run_id=run_id, workflow_uid=f"wf-{run_id}")
        started = RunStarted.make(
            run=ref,
            run_name=run_name,
            pipeline_name="doubling",
            experiment=experiment,
            node="node-a",
            volumes=(VolumeRef(name="workspace", role="workspace", path="/vol/workspace"),),
            started_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        )
        self.call(self.recorder.record(started))
        (bucket,) = [b for b in self.buckets(namespace) if b.name == experiment]
        files = self.call(self.queries.files(ListFiles(namespace=namespace, bucket=bucket.name))).items
        (found,) = [f for f in files if f.run_id == run_id]
        return found


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[RegistryThread]:
    with RegistryThread(tmp_path_factory.mktemp("registry")) as served:
        yield served


@pytest.fixture(autouse=True)
def registry_address(registry: RegistryThread, monkeypatch, tmp_path) -> None:
    """``rok submit`` finds the registry as in a notebook server: ROK_REGISTRY_URL and a token."""
    monkeypatch.setenv("ROK_REGISTRY_URL", registry.url)
    monkeypatch.setenv("ROK_TOKEN", REGISTRY_TOKEN)
    monkeypatch.setenv("ROK_TOKEN_FILE", str(tmp_path / "no-service-account-token"))


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("package") / "doubling.yaml"
    compiler.Compiler().compile(doubling, str(path))
    return path


def submitted(result) -> tuple[str, dict[str, str]]:
    assert result.code == 0, result.err
    first, *links = result.out.splitlines()
    return first, dict(line.split() for line in links)


def test_a_compiled_pipeline_is_run_in_the_experiment_s_bucket_named_with_its_suffix(
    fake_kfp: FakeKfp, package, registry: RegistryThread
):
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
    (bucket,) = [b for b in registry.buckets() if b.experiment == "churn"]
    assert experiment.display_name == bucket.name == f"churn-{bucket.suffix}"
    assert run.experiment_id == experiment.experiment_id
    assert run.display_name.startswith(f"doubling-{bucket.suffix}-") and len(run.display_name) == len("doubling") + 11
    assert pipeline.display_name == "doubling"
    assert run.pipeline_version_reference.pipeline_version_id == version_id
    assert run.runtime_config.parameters == {"rows": 12}  # typed as the pipeline declares it; label keeps its default
    assert yaml.safe_load_all(uploaded.decode()).__next__()["pipelineInfo"]["name"] == "doubling"
    assert first == f"run {run.run_id} ({run.display_name}) in experiment {bucket.name}"
    assert links["kfp"] == f"{fake_kfp.url}/#/runs/details/{run.run_id}"
    assert links["rok"] == f"http://rok.example/search?ns=local&q={run.run_id}"

    # the watcher's RunStarted names the KFP experiment and run: the registry files the run in the same bucket
    recorded = registry.record_start(run_id=run.run_id, run_name=run.display_name, experiment=experiment.display_name)
    assert recorded.bucket == bucket.name and recorded.name.startswith(f"{run.display_name}-")
    assert recorded.name.count(bucket.suffix) == 1
    assert [b.name for b in registry.buckets() if b.name.startswith("churn")] == [bucket.name]


def test_submitting_again_uploads_a_new_version_and_reuses_the_experiment_and_its_bucket(
    fake_kfp: FakeKfp, package, monkeypatch, registry: RegistryThread
):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", fake_kfp.url)
    token = package.parent / "token"
    token.write_text("kfp-test-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))

    for _ in range(2):
        submitted(rok("submit", str(package), "--experiment", "retrain"))

    (bucket,) = [b for b in registry.buckets() if b.experiment == "retrain"]
    assert len(fake_kfp.pipelines) == 1 and len(fake_kfp.experiments) == 1
    assert [e.display_name for e in fake_kfp.experiments.values()] == [bucket.name]
    assert len(fake_kfp.versions) == 2
    first, second = fake_kfp.runs.values()
    assert first.pipeline_version_reference.pipeline_version_id != second.pipeline_version_reference.pipeline_version_id
    assert first.display_name != second.display_name
    assert all(r.display_name.startswith(f"doubling-{bucket.suffix}-") for r in (first, second))
    assert second.display_name in {v.display_name for v in fake_kfp.versions.values()}


def test_without_a_registry_address_nothing_is_created_in_kfp_and_the_error_says_how_to_give_one(
    fake_kfp: FakeKfp, package, monkeypatch
):
    monkeypatch.delenv("ROK_REGISTRY_URL")

    result = rok("submit", str(package), "--endpoint", fake_kfp.url, "--token", "kfp-test-token")

    assert result.code == 2
    assert "--rok-registry or ROK_REGISTRY_URL" in result.err and "nothing was created in KFP" in result.err
    assert fake_kfp.requests == []


def test_a_registry_that_does_not_answer_stops_the_submit_before_kfp_is_asked(fake_kfp: FakeKfp, package):
    nowhere = f"http://127.0.0.1:{free_port()}"

    result = rok(
        "submit", str(package), "--endpoint", fake_kfp.url, "--token", "kfp-test-token", "--rok-registry", nowhere
    )

    assert result.code == 75  # try again
    assert f"the registry at {nowhere} did not answer" in result.err
    assert "--rok-registry or ROK_REGISTRY_URL" in result.err and "Traceback" not in result.err
    assert fake_kfp.requests == []


def test_an_address_that_is_not_the_registry_s_stops_the_submit_before_anything_is_created(fake_kfp: FakeKfp, package):
    result = rok(
        "submit", str(package), "--endpoint", fake_kfp.url, "--token", "kfp-test-token", "--rok-registry", fake_kfp.url
    )

    assert result.code != 0 and len(result.err.splitlines()) == 1
    assert fake_kfp.url in result.err and "nothing was created in KFP" in result.err and "Traceback" not in result.err
    assert not fake_kfp.pipelines and not fake_kfp.experiments and not fake_kfp.runs


def test_a_registry_that_refuses_the_token_stops_the_submit_before_kfp_is_asked(
    fake_kfp: FakeKfp, package, monkeypatch
):
    monkeypatch.setenv("ROK_TOKEN", "not-the-registry-s")

    result = rok("submit", str(package), "--endpoint", fake_kfp.url, "--token", "kfp-test-token")

    assert result.code == 4
    assert "ROK_TOKEN" in result.err and "nothing was created in KFP" in result.err
    assert fake_kfp.requests == []


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


def test_a_notebook_is_compiled_and_run_in_its_own_experiment_s_bucket(
    fake_kfp: FakeKfp, tmp_path, registry: RegistryThread
):
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
    (bucket,) = [b for b in registry.buckets() if b.experiment == "churn-trials"]
    assert experiment.display_name == bucket.name == f"churn-trials-{bucket.suffix}"
    assert set(spec["root"]["dag"]["tasks"]) == {"create-volume-1", "load"}
    assert run.display_name.startswith(f"churn-nb-{bucket.suffix}-") and first.endswith(f"in experiment {bucket.name}")
