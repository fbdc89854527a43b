"""``rok submit``: a compiled pipeline to Kubeflow Pipelines through the KFP SDK's client (``kfp.Client``).

Upload the package as a new version of its pipeline (the pipeline itself the first time), find or create the
experiment, create the run. The pipeline version and the run are named ``<pipeline>-<suffix>``, a short random
suffix of the alphabet rok names its buckets with, so that the run is easy to find in KFP's UI and in rok's.
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

from rokcommon.errors import PermanentError, TemporaryError

SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


class SubmitError(PermanentError):
    exit_code = 2


@dataclass(frozen=True)
class Submitted:
    run_id: str
    run_name: str
    experiment_id: str
    experiment: str
    pipeline_id: str
    version_id: str
    kfp_url: str  # the run in KFP's UI
    rok_url: str  # the run in rok's web pages (it resolves once the run's first snapshot is recorded)


def suffix(length: int = 5) -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(length))


def rok_run_url(web: str, namespace: str, run_id: str) -> str:
    """The page of rok's web UI that finds the run ``run_id`` (its file, and so its versions)."""
    return f"{web.rstrip('/')}/search?{urlencode({'ns': namespace, 'q': run_id})}"


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
) -> Submitted:
    """Upload ``package`` and start a run of it; the KFP API's refusals become one-line errors."""
    client = _client(endpoint, token, namespace)
    name = f"{pipeline_name}-{suffix()}"
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
            found = client.create_experiment(experiment, namespace=namespace)
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
        experiment=experiment,
        pipeline_id=pipeline_id,
        version_id=version_id,
        kfp_url=f"{endpoint.rstrip('/')}/#/runs/details/{run.run_id}",
        rok_url=rok_run_url(rok_web, rok_namespace, run.run_id),
    )
