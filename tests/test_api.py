"""The public API: every name resolves to what it promises, whatever was imported before."""
from __future__ import annotations

import importlib
import pkgutil
import types

import registry_tools


def test_api_names_are_not_shadowed_by_submodules():
    for mod in pkgutil.iter_modules(registry_tools.__path__):
        if mod.name != "__main__":
            importlib.import_module(f"registry_tools.{mod.name}")  # as the CLI and users do
    for name in registry_tools.__all__:
        value = getattr(registry_tools, name)
        assert not isinstance(value, types.ModuleType), f"registry_tools.{name} is a module"
    for name in ("pull_image", "prefetch", "build", "push", "load_spec"):
        assert callable(getattr(registry_tools, name))
