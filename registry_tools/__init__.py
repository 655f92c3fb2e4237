"""registry-tools: pin, pull, build and push OCI and Docker images by talking to registries.

The API is imported on first use, so a command pays only for the modules it needs. No
module shares a name with an API function: importing a submodule sets the package's
attribute of that name, which would hide the function.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "pull_image": "api.pull", "PullOptions": "api.pull", "PullResult": "api.pull",
    "prefetch": "api.prefetch", "PrefetchOptions": "api.prefetch", "Pin": "api.prefetch",
    "assemble": "api.assemble", "AssembleOptions": "api.assemble",
    "build": "api.build", "BuildResult": "api.build", "IndexBuildResult": "api.build",
    "push": "api.push", "PushResult": "api.push",
    "copy": "api.copy", "CopyOptions": "api.copy", "CopyResult": "api.copy", "export": "api.export",
    "mutate": "api.surgery", "MutateOptions": "api.surgery", "append": "api.surgery", "AppendOptions": "api.surgery",
    "flatten": "api.surgery", "FlattenOptions": "api.surgery", "rebase": "api.surgery",
    "RebaseOptions": "api.surgery", "check_base": "api.surgery", "CheckBaseOptions": "api.surgery",
    "Ends": "api.surgery", "diff": "api.diff", "DiffOptions": "api.diff",
    "Session": "session", "RegistryToolsError": "errors", "load_spec": "builder.multispec",
    "parse_spec": "builder.spec", "parse_build": "builder.multispec", "MultiSpec": "builder.multispec",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'registry_tools' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
