"""The identity of a version, defined once: :class:`VersionKey`.

A version is the state of a run's volumes at one point: the run's start (phase ``initial``), or just before or
just after one attempt of one step. Its key is (workflow uid, step id, attempt, phase). Everything that names a
version or a fact about it is derived from that key here, and nowhere else:

- the event ids of the step event that asks for the version, of each volume's snapshot outcome and of the
  commit (:meth:`VersionKey.event_id`), so that a retried step's attempts never share an id;
- the registry's short, URL-safe version id (:attr:`VersionKey.version_id`);
- what a step guard or the local runner waits for: the key itself (it is hashable).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

Phase = Literal["initial", "before", "after"]
StepPhase = Literal["before", "after"]


def stable_id(*parts: object) -> str:
    """A short deterministic id from the parts that identify a fact."""
    return hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class VersionKey:
    """What identifies one version: the run's start (no step), or one phase of one attempt of one step."""

    workflow_uid: str
    phase: Phase
    step_id: str | None = None
    attempt: int = 0

    def __post_init__(self) -> None:
        if (self.phase == "initial") != (self.step_id is None):
            raise ValueError(
                f"a version of phase {self.phase!r} {'has no' if self.phase == 'initial' else 'needs a'} step "
                f"(got step id {self.step_id!r})"
            )
        if self.attempt < 0:
            raise ValueError(f"attempt {self.attempt} must be 0 or more")

    @classmethod
    def initial(cls, workflow_uid: str) -> VersionKey:
        """The version of the notebook's volumes taken when the run starts."""
        return cls(workflow_uid, "initial")

    @classmethod
    def of_step(cls, workflow_uid: str, step_id: str, attempt: int, phase: StepPhase) -> VersionKey:
        """The version just before or just after one attempt of one step."""
        return cls(workflow_uid, phase, step_id, attempt)

    def event_id(self, fact: str, *detail: str) -> str:
        """The deterministic id of one fact about this version, e.g. ``event_id("snapshot completed", volume)``."""
        return stable_id(self.workflow_uid, self.step_id or "-", self.attempt, self.phase, fact, *detail)

    @property
    def of_node(self) -> tuple[str, str | None, Phase]:
        """The key without the attempt, for whoever knows only the workflow node (a step guard in a pod).

        Argo runs each attempt of a step as a workflow node of its own, so there the node id alone tells the
        attempts apart; the local runner numbers attempts of one node, and waits on the whole key.
        """
        return self.workflow_uid, self.step_id, self.phase

    @property
    def version_id(self) -> str:
        """The registry's id of this version: ten characters of ``[a-z2-7]``, short and URL-safe.

        The digest is the one the registry has always used, so versions recorded before keep their ids.
        """
        text = f"{self.workflow_uid}\x1f{self.step_id or ''}\x1f{self.attempt}\x1f{self.phase}"
        return base32_digest(text, 10)


def base32_digest(text: str, length: int) -> str:
    """``length`` characters of ``[a-z2-7]`` derived from ``text``."""
    raw = hashlib.blake2b(text.encode(), digest_size=10).digest()
    return base64.b32encode(raw).decode().lower()[:length]
