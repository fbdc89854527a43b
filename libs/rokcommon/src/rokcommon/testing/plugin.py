"""The pytest plugin every package's tests load (``-p rokcommon.testing.plugin`` in the root pyproject)."""

from rokcommon.testing.kubernetes import *  # noqa: F403
from rokcommon.testing.nats import *  # noqa: F403
from rokcommon.testing.postgres import *  # noqa: F403
from rokcommon.testing.s3 import *  # noqa: F403
