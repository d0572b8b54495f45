"""Names a package exports, imported on first use (PEP 562), so importing the package stays cheap; and the
old import paths of modules that moved, answered by the modules themselves."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib import import_module
from typing import Callable


def exports(package: str, names: dict[str, str], moved: dict[str, str] | None = None
            ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps each name to its submodule; ``moved``
    (old module name -> its new path) answers ``package.old`` with the moved module, imported or not."""
    namespace = import_module(package).__dict__
    moved = moved or {}

    def __getattr__(name: str):
        if name in moved:
            value = namespace[name] = import_module(f"{package}.{moved[name]}")
            return value
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{names[name]}"), name)
        namespace[name] = value  # next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``<package>.<old>`` for each moved module and answers with the module at its new path (the same
    object, so patching either name patches both)."""

    def __init__(self, package: str, moved: dict[str, str]) -> None:
        self.package, self.moved = package, moved

    def find_spec(self, name: str, path=None, target=None):
        prefix, _, old = name.rpartition(".")
        if prefix == self.package and old in self.moved:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return import_module(f"{self.package}.{self.moved[spec.name.rpartition('.')[2]]}")

    def exec_module(self, module) -> None:  # already executed at its new path
        pass


def alias_moved(package: str, moved: dict[str, str]) -> None:
    """``import package.old`` (and ``from package import old``) for each ``old -> new`` in ``moved``."""
    if not any(isinstance(f, _Moved) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(_Moved(package, moved))
