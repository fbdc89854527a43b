"""The local pipeline runner (``rok run PIPELINE.yaml``): KFP's part, played on one machine.

* :mod:`.pipeline` reads and checks the pipeline file;
* :mod:`.workflow` keeps the run's state as Argo-shaped objects, which go through the one translator;
* :mod:`.engine` runs the steps, waiting for each snapshot's commit, behind a small :class:`~.engine.Bus`;
* :mod:`.nats_bus` is that bus on NATS JetStream; :mod:`.cli` is the command.
"""
