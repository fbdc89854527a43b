"""``rok submit``: a compiled pipeline to Kubeflow Pipelines through the KFP SDK's client (``kfp.Client``).

First ask rok's registry (its HTTP API, :class:`~rokcommon.registry_http.Remote`) for the experiment's bucket,
named now if the experiment has none yet; then upload the package as a new version of its pipeline (the pipeline
itself the first time), find or create the experiment, create the run. Names carry the bucket's suffix, as Rok's
do: the KFP experiment is the bucket's own name (``churn-ab3cd``, which the registry maps back to that
bucket when the run's events arrive), the pipeline version and the run ``<pipeline>-<bucket suffix>-<4 random
characters>`` (KFP refuses two versions of one name in a pipeline), and the registry's file of the run
``<run name>-<4 characters of its workflow uid>``, so that a run is found by the same name in KFP's UI and in rok's.
Nothing is created in KFP unless the registry answered.
"""

from __future__ import annotations

import contextlib
import secrets
import string
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from rokcommon.errors import Forbidden, PermanentError, RokError, TemporaryError
from rokcommon.registry_http import Remote

SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


class SubmitError(PermanentError):
    exit_code = 2


@dataclass(frozen=True)
class ExperimentBucket:
    """The registry's bucket of an experiment: the KFP experiment is named ``name``, the run carries ``suffix``."""

    name: str
    suffix: str


@dataclass(frozen=True)
class Submitted:
    run_id: str
    run_name: str
    experiment_id: str
    experiment: str  # the KFP experiment's name: the bucket's
    pipeline_id: str
    version_id: str
    kfp_url: str  # the run in KFP's UI
    rok_url: str  # the run in rok's web pages (it resolves once the run's first snapshot is recorded)


def suffix(length: int = 5) -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(length))


def rok_run_url(web: str, namespace: str, run_id: str) -> str:
    """The page of rok's web UI that finds the run ``run_id`` (its file, and so its versions)."""
    return f"{web.rstrip('/')}/search?{urlencode({'ns': namespace, 'q': run_id})}"


def experiment_bucket(registry: Remote | None, namespace: str, experiment: str) -> ExperimentBucket:
    """The bucket of ``experiment`` in ``namespace``, which the registry names now if it has none yet."""
    if registry is None:
        raise SubmitError(
            "rok submit names the KFP experiment and the run after the experiment's bucket in rok's registry: "
            "give the registry's address with --rok-registry or ROK_REGISTRY_URL (and a token with ROK_TOKEN, "
            "else the pod's service account token is sent); nothing was created in KFP"
        )
    try:
        found: Any = registry.experiment_bucket(namespace, experiment)
    except ValueError:  # an answer that is not JSON: not the registry's API
        found = None
    except TemporaryError as error:
        raise TemporaryError(
            f"{error}; nothing was created in KFP (rok submit asks the registry for the bucket of experiment "
            f"{experiment!r} first): check the address given with --rok-registry or ROK_REGISTRY_URL"
        ) from None
    except Forbidden as error:
        raise Forbidden(
            f"the registry at {registry.url} refused to name the bucket of experiment {experiment!r} in namespace "
            f"{namespace!r} ({error}); nothing was created in KFP (the namespace is --namespace, else ROK_NAMESPACE)"
        ) from None
    except RokError as error:
        raise SubmitError(
            f"the registry at {registry.url} did not name the bucket of experiment {experiment!r}: {error}; "
            "nothing was created in KFP"
        ) from None
    try:
        return ExperimentBucket(name=str(found["name"]), suffix=str(found["suffix"]))
    except (KeyError, TypeError):
        raise SubmitError(
            f"{registry.url} answered no bucket's name and suffix (is it rok's registry? set --rok-registry or "
            "ROK_REGISTRY_URL to its address); nothing was created in KFP"
        ) from None


def _client(endpoint: str, token: str | None, namespace: str | None) -> Any:
    """The SDK's client, once one health check with the token has passed: the client retries its own check
    for 25 s and logs a traceback each time, which a wrong token or address does not deserve."""
    import kfp
    import kfp_server_api

    config = kfp_server_api.Configuration(host=endpoint)
    if token:
        config.api_key["authorization"] = token
        config.api_key_prefix["authorization"] = "Bearer"
    try:
        config.retries = 1
        with kfp_server_api.ApiClient(config) as api:
            kfp_server_api.HealthzServiceApi(api).healthz_service_get_healthz(_request_timeout=30)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "This client only works with … v2.0.0-beta.2 and later"
            return kfp.Client(host=endpoint, existing_token=token, namespace=namespace or "kubeflow")
    except Exception as error:  # the SDK raises whatever urllib3 and the generated client raise
        raise _explained(error, endpoint) from error


def _explained(error: Exception, endpoint: str) -> Exception:
    from kfp_server_api.exceptions import ApiException

    if isinstance(error, ApiException):
        if error.status in (401, 403):
            return SubmitError(
                f"the KFP API at {endpoint} refused the request ({error.status} {error.reason}): give a token with "
                "--token or KF_PIPELINES_SA_TOKEN_PATH (a service account token for pipelines.kubeflow.org)"
            )
        return SubmitError(f"the KFP API at {endpoint} answered {error.status} {error.reason}: {error.body}")
    return TemporaryError(f"cannot reach the KFP API at {endpoint}: {error}")


def submit(
    package: Path,
    *,
    pipeline_name: str,
    endpoint: str,
    token: str | None,
    namespace: str | None,
    experiment: str,
    parameters: Mapping[str, Any],
    rok_web: str,
    rok_namespace: str,
    registry: Remote | None,
) -> Submitted:
    """Ask the registry for ``experiment``'s bucket, then upload ``package`` and start a run of it in KFP, named
    with the bucket's name and suffix; the registry's and the KFP API's refusals become one-line errors."""
    bucket = experiment_bucket(registry, rok_namespace, experiment)
    client = _client(endpoint, token, namespace)
    name = f"{pipeline_name}-{bucket.suffix}-{suffix(4)}"
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the SDK prints its links; ours go to stdout
            pipeline_id = client.get_pipeline_id(pipeline_name)
            if pipeline_id is None:
                pipeline = client.upload_pipeline(str(package), pipeline_name=pipeline_name, namespace=namespace)
                pipeline_id = pipeline.pipeline_id
                versions = client.list_pipeline_versions(pipeline_id).pipeline_versions or []
                version_id = versions[0].pipeline_version_id
            else:
                version_id = client.upload_pipeline_version(
                    str(package), pipeline_version_name=name, pipeline_id=pipeline_id
                ).pipeline_version_id
            found = client.create_experiment(
                bucket.name, description=f"{experiment}: rok's bucket {bucket.name}", namespace=namespace
            )
            run = client.run_pipeline(
                experiment_id=found.experiment_id,
                job_name=name,
                params=dict(parameters),
                pipeline_id=pipeline_id,
                version_id=version_id,
            )
    except (SubmitError, TemporaryError):
        raise
    except Exception as error:
        raise _explained(error, endpoint) from error
    return Submitted(
        run_id=run.run_id,
        run_name=name,
        experiment_id=found.experiment_id,
        experiment=bucket.name,
        pipeline_id=pipeline_id,
        version_id=version_id,
        kfp_url=f"{endpoint.rstrip('/')}/#/runs/details/{run.run_id}",
        rok_url=rok_run_url(rok_web, rok_namespace, run.run_id),
    )
