"""The pytest plugin every package's tests load (``-p roktesting.plugin`` in the root pyproject)."""

from roktesting.kfp_api import *  # noqa: F403
from roktesting.kubernetes import *  # noqa: F403
from roktesting.nats import *  # noqa: F403
from roktesting.otlp import *  # noqa: F403
from roktesting.postgres import *  # noqa: F403
from roktesting.s3 import *  # noqa: F403
