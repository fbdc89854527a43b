"""The rok operator: a RokCluster resource in, the whole of rok on the cluster out, kept as the resource says."""

from rok_operator.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION, InvalidSpec, RokClusterSpec, parse

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "InvalidSpec", "RokClusterSpec", "parse"]
