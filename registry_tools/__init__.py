"""registry-tools: pin, pull, build and push OCI and Docker images by talking to registries."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import RegistryToolsError  # noqa: E402
from .pull import PullResult, pull_image  # noqa: E402
from .session import Session  # noqa: E402

__all__ = ["PullResult", "RegistryToolsError", "Session", "pull_image", "__version__"]
