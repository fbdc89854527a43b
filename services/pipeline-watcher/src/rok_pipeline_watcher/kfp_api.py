"""What the KFP API knows of a run: its experiment and pipeline version (``/apis/v2beta1``).

In multi-user Kubeflow the API wants a bearer token: a service account token projected for KFP's audience
(``ROK_KFP_API_TOKEN_FILE``, e.g. ``/var/run/secrets/kubeflow/pipelines/token``), read at every call.

When the API cannot be reached the run is still recorded: :class:`RunInfo` then has ``experiment=None``,
the registry files the run under its fallback bucket, and the gap is logged here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp

from rok_pipeline_watcher.translator import RunInfo

log = logging.getLogger(__name__)


class KfpApi:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        token_file: Path | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token_file = token_file
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._cache: dict[str, RunInfo] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run_info(self, run_id: str) -> RunInfo:
        """The run's experiment (display name), pipeline name and version; asked once per run."""
        if run_id in self._cache:
            return self._cache[run_id]
        try:
            run = await self._get(f"/apis/v2beta1/runs/{run_id}")
            experiment_id = run.get("experiment_id")
            experiment = await self._get(f"/apis/v2beta1/experiments/{experiment_id}") if experiment_id else {}
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as error:
            log.warning(
                "KFP API at %s did not answer for run %s (%s): recording the run without its experiment",
                self.base_url,
                run_id,
                error,
                extra={"run_id": run_id},
            )
            info = RunInfo()
        else:
            reference = run.get("pipeline_version_reference") or {}
            spec_name = ((run.get("pipeline_spec") or {}).get("pipelineInfo") or {}).get("name")
            info = RunInfo(
                pipeline_name=spec_name or None,
                pipeline_version=reference.get("pipeline_version_id") or run.get("pipeline_version_id"),
                experiment=experiment.get("display_name") or experiment_id or None,
            )
        self._cache[run_id] = info
        return info

    async def _get(self, path: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {}
        if self._token_file is not None:  # read at every call: projected service account tokens rotate
            headers["Authorization"] = f"Bearer {self._token_file.read_text().strip()}"
        async with self._session.get(self.base_url + path, headers=headers) as response:
            response.raise_for_status()
            data = await response.json()
        if not isinstance(data, dict):
            raise ValueError(f"{path} answered {type(data).__name__}, not an object")
        return data
