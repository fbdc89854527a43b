"""The attacker suite: two users in two profile namespaces against the real registry and restorer.

``stage`` (conftest.py, one per module) is the cluster: a nats-server with rok's users and permissions, the
fake Kubernetes API answering TokenReview and SubjectAccessReview from Kubeflow's RBAC, the registry and the
restorer in cluster mode, and one recorded run in each namespace (stage.py says who may do what). A test plays
one attacker's move over HTTP, NATS or the CLI, checks that it is refused, and that the legitimate move beside it
still works. docs/security.md says which boundary each module covers.
"""
