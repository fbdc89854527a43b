"""Leader election with a ``coordination.k8s.io/v1`` Lease, so that of several watcher replicas one publishes.

The leader renews the Lease every ``renew_every`` seconds; another replica takes it over only once it has not
been renewed for ``lease_seconds``. Every write carries the resourceVersion it was based on, so two replicas
racing for an expired Lease cannot both win: the API server refuses the second write (409 Conflict). A leader
that cannot renew before its Lease expires stops leading (``lost`` is set, :class:`LeaseLost` is raised)
before anyone else may take over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.rest import ApiException
from rokcommon.errors import TemporaryError

log = logging.getLogger(__name__)


class LeaseLost(TemporaryError):
    """This replica no longer leads: it must stop publishing (Kubernetes restarts it as a standby)."""


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElection:
    def __init__(
        self,
        api_client: Any,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_seconds: int = 15,
        renew_every: float = 5.0,
    ) -> None:
        if renew_every * 2 > lease_seconds:
            raise ValueError(f"renew_every ({renew_every}s) must be at most half of lease_seconds ({lease_seconds}s)")
        self.api = client.CoordinationV1Api(api_client)
        self.name, self.namespace, self.identity = name, namespace, identity
        self.lease_seconds, self.renew_every = lease_seconds, renew_every
        self.acquired = asyncio.Event()
        self.lost = asyncio.Event()

    async def run(self) -> None:
        """Wait to become the leader, then renew until cancelled or the Lease is lost."""
        # polling the API server is the protocol: nothing tells a standby that a Lease expired
        while await asyncio.to_thread(self._try_acquire) != "held":  # noqa: ASYNC110
            await asyncio.sleep(self.renew_every)
        log.info("leading", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
        self.acquired.set()
        renewed = time.monotonic()
        try:
            while True:
                await asyncio.sleep(self.renew_every)
                status = await asyncio.to_thread(self._try_acquire)
                if status == "held":
                    renewed = time.monotonic()
                elif status == "taken" or time.monotonic() - renewed > self.lease_seconds - self.renew_every:
                    self.lost.set()
                    raise LeaseLost(f"lost the lease {self.namespace}/{self.name} ({status}): stopping")
        except asyncio.CancelledError:
            await asyncio.to_thread(self._release)
            raise

    def _try_acquire(self) -> Literal["held", "taken", "unknown"]:
        """Create, renew or take over the Lease: ``held`` by us now, ``taken`` by another holder whose Lease is
        still valid, or ``unknown`` (the API server could not be asked, or another replica wrote first)."""
        now = _now()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                log.warning("cannot read lease %s/%s: %s", self.namespace, self.name, error.reason)
                return "unknown"
            return self._write(None, now)
        spec = lease.spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        if holder and holder != self.identity:
            last = spec.renew_time or spec.acquire_time
            duration = spec.lease_duration_seconds or self.lease_seconds
            if last is not None and (now - last).total_seconds() < duration:
                return "taken"
        return self._write(lease, now)

    def _write(self, lease: Any, now: datetime) -> Literal["held", "unknown"]:
        taking_over = lease is None or lease.spec.holder_identity != self.identity
        spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=now if taking_over else lease.spec.acquire_time,
            renew_time=now,
            lease_transitions=(lease.spec.lease_transitions or 0) + (1 if taking_over else 0) if lease else 0,
        )
        try:
            if lease is None:
                body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=spec)
                self.api.create_namespaced_lease(self.namespace, body)
            else:
                lease.spec = spec  # metadata keeps the resourceVersion this write is based on
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status not in (409, 422):  # 409/422: another replica wrote first
                log.warning("cannot write lease %s/%s: %s", self.namespace, self.name, error.reason)
            return "unknown"
        return "held"

    def _release(self) -> None:
        """Give the Lease up at shutdown so that another replica need not wait for it to expire."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            log.warning("cannot release lease %s/%s: %s", self.namespace, self.name, error.reason)
