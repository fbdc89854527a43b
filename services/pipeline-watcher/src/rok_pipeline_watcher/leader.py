"""Leader election with a ``coordination.k8s.io/v1`` Lease, so that of several watcher replicas one publishes.

The leader renews the Lease every ``renew_every`` seconds; another replica takes it over only once it has not
seen the Lease record change for ``lease_seconds``, measured on its own monotonic clock from the moment it
last observed a change (as client-go's ``leaderelection`` does). The holder's ``renewTime`` is written for
people and tools to read, never compared with this replica's wall clock: the clocks of two nodes may differ
by minutes, and a comparison across them would let a standby take over a Lease that is being renewed.

Every write carries the resourceVersion it was based on, so two replicas racing for an expired Lease cannot
both win: the API server refuses the second write (409 Conflict). A leader that cannot renew for
``lease_seconds - renew_every`` stops leading (``lost`` is set, :class:`LeaseLost` is raised): a standby
waits at least ``lease_seconds`` after the last renewal it saw, so the old leader has stopped by then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
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


def _record(spec: Any) -> tuple[Any, ...]:
    """What identifies one state of the Lease record: any change of it shows the holder is alive."""
    return (
        spec.holder_identity,
        spec.renew_time,
        spec.acquire_time,
        spec.lease_duration_seconds,
        spec.lease_transitions,
    )


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
        wall_clock: Callable[[], datetime] = _now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``wall_clock`` stamps what this replica writes (``acquireTime``, ``renewTime``); ``monotonic``
        measures every duration. Both are injectable so that tests can give replicas skewed clocks."""
        if renew_every * 2 > lease_seconds:
            raise ValueError(f"renew_every ({renew_every}s) must be at most half of lease_seconds ({lease_seconds}s)")
        self.api = client.CoordinationV1Api(api_client)
        self.name, self.namespace, self.identity = name, namespace, identity
        self.lease_seconds, self.renew_every = lease_seconds, renew_every
        self.acquired = asyncio.Event()
        self.lost = asyncio.Event()
        self._wall, self._monotonic = wall_clock, monotonic
        self._observed: tuple[Any, ...] | None = None  # the record as this replica last saw it change …
        self._observed_at = 0.0  # … and when, on this replica's monotonic clock

    async def run(self) -> None:
        """Wait to become the leader, then renew until cancelled or the Lease is lost."""
        # polling the API server is the protocol: nothing tells a standby that a Lease expired
        while True:
            attempt = self._monotonic()
            if await asyncio.to_thread(self._try_acquire) == "held":
                break
            await asyncio.sleep(self.renew_every)
        log.info("leading", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
        self.acquired.set()
        renewed = attempt  # when the last successful write was begun: no standby saw it earlier
        try:
            while True:
                # stop leading by the deadline, whatever the API server does: a standby takes over no sooner
                # than lease_seconds after it saw the last renewal, that is renew_every after the deadline
                deadline = renewed + self.lease_seconds - self.renew_every
                await asyncio.sleep(max(0.0, min(self.renew_every, deadline - self._monotonic())))
                attempt = self._monotonic()
                status: str = "unknown"
                if attempt < deadline:
                    try:
                        status = await asyncio.wait_for(asyncio.to_thread(self._try_acquire), deadline - attempt)
                    except TimeoutError:
                        status = "unknown"
                if status == "held":
                    renewed = attempt
                elif status == "taken" or self._monotonic() >= deadline:
                    self.lost.set()
                    raise LeaseLost(f"lost the lease {self.namespace}/{self.name} ({status}): stopping")
        except asyncio.CancelledError:
            await asyncio.to_thread(self._release)
            raise

    def _try_acquire(self) -> Literal["held", "taken", "unknown"]:
        """Create, renew or take over the Lease: ``held`` by us now, ``taken`` by another holder whose Lease is
        still valid, or ``unknown`` (the API server could not be asked, or another replica wrote first)."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                log.warning("cannot read lease %s/%s: %s", self.namespace, self.name, error.reason)
                return "unknown"
            return self._write(None, self._wall())
        except Exception as error:  # the API server cannot be reached (urllib3's errors)
            log.warning("cannot read lease %s/%s: %s", self.namespace, self.name, error)
            return "unknown"
        spec = lease.spec = lease.spec or client.V1LeaseSpec()
        seen = self._monotonic()
        if _record(spec) != self._observed:
            self._observed, self._observed_at = _record(spec), seen
        holder = spec.holder_identity
        if holder and holder != self.identity:
            duration = spec.lease_duration_seconds or self.lease_seconds
            if seen - self._observed_at < duration:
                return "taken"
        return self._write(lease, self._wall())

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
        except Exception as error:  # the API server cannot be reached
            log.warning("cannot write lease %s/%s: %s", self.namespace, self.name, error)
            return "unknown"
        self._observed, self._observed_at = _record(spec), self._monotonic()
        return "held"

    def _release(self) -> None:
        """Give the Lease up at shutdown so that another replica need not wait for it to expire."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as error:  # ApiException, or the API server cannot be reached
            log.warning("cannot release lease %s/%s: %s", self.namespace, self.name, error)
