"""Pipelines written with the KFP SDK, on this machine and for a cluster.

* :mod:`.spec` reads a KFP-compiled pipeline for ``rok run`` and refuses what this machine cannot run;
* :mod:`.launch` runs one of its tasks with the SDK's local execution, between the task's snapshots;
* :mod:`.mounts` runs a task in a mount namespace of its own, with each PVC it mounts at its mount path.
"""
