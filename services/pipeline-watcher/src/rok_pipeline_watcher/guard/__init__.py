"""The step guard (docs/step-guard.md): a native sidecar that holds a KFP step until its before-snapshot is
committed, and holds the pod's end until its after-snapshot is committed.

* :mod:`.admission` — the mutating webhook's decision: AdmissionReview in, JSON patch out;
* :mod:`.webhook` — the HTTPS server that answers the API server;
* :mod:`.program` — what runs in the sidecar (``rok-guard run``) and its startup probe (``rok-guard probe``).
"""

from rok_pipeline_watcher.guard.admission import GuardConfig, guard_container, is_step_pod, review

__all__ = ["GuardConfig", "guard_container", "is_step_pod", "review"]
