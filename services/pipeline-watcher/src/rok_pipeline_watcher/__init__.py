"""rok's pipeline-watcher: KFP runs (from Kubernetes, or the local runner) → run and step events on the bus."""

from rok_pipeline_watcher.translator import RunInfo, RunState, Translator

__all__ = ["RunInfo", "RunState", "Translator"]
