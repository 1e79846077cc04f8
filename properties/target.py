"""Turning a TARGET string into a model.

- ``zoo`` / ``zoo:NAME``: the built-in models (handled by :mod:`properties.extra.zoo`);
- ``package.module:attr`` (importable) or ``path/to/file.py:attr``;
- ``attr`` (dotted allowed) names an ``nn.Module``, an ``nn.Module`` subclass (built with no
  arguments) or a zero-argument callable that returns a module.

Every failure is a :class:`~properties.errors.TargetError` with a one-line message and a fix.
"""

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from properties.errors import TargetError, describe

__all__ = ["build_model", "import_source", "load_target", "resolve_attribute", "split_target"]


def split_target(target: str) -> tuple[str, str]:
    if ":" not in target:
        raise TargetError(
            f"target {target!r} names no attribute",
            "use module:attr or path/to/file.py:attr (or zoo, zoo:NAME)",
        )
    where, attr = target.rsplit(":", 1)
    if not where or not attr:
        raise TargetError(
            f"target {target!r} is incomplete", "use module:attr or path/to/file.py:attr"
        )
    return where, attr


def import_source(where: str) -> ModuleType:
    """Import a module by dotted name or from a ``.py`` file."""
    if where.endswith(".py") or "/" in where or "\\" in where:
        return _import_file(Path(where))
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise TargetError(
                f"no module named {where!r}",
                "check the spelling, install it, or run from the directory that holds it",
            ) from None
        raise TargetError(
            f"importing {where!r} failed: {describe(exc)}", "install what the module needs"
        ) from None
    except Exception as exc:
        raise TargetError(
            f"importing {where!r} raised {describe(exc)}", "fix the module so that it imports"
        ) from None


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"no file {str(path)!r}", "check the path (relative to where you run)")
    name = f"_causal_audit_target_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {str(path)!r}", "give a Python source file (.py)")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # let the file import its neighbours
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise TargetError(
            f"importing {str(path)!r} raised {describe(exc)}", "fix the file so that it imports"
        ) from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def resolve_attribute(module: ModuleType, attr: str, target: str):
    value = module
    for part in attr.split("."):
        if not hasattr(value, part):
            candidates = [
                k
                for k, v in vars(module).items()
                if not k.startswith("_")
                and (isinstance(v, nn.Module) or (inspect.isclass(v) and issubclass(v, nn.Module)))
            ]
            hint = f" (modules there: {', '.join(sorted(candidates))})" if candidates else ""
            raise TargetError(
                f"{target}: {type(value).__name__} has no attribute {part!r}{hint}",
                "name an nn.Module, a module class or a factory function",
            )
        value = getattr(value, part)
    return value


def build_model(value, target: str) -> nn.Module:
    """An ``nn.Module`` from a module, a module class or a zero-argument factory."""
    if isinstance(value, nn.Module):
        return value
    if not callable(value):
        raise TargetError(
            f"{target} is a {type(value).__name__}, not a module or a callable",
            "point at an nn.Module, a module class or a zero-argument function returning one",
        )
    try:
        model = value()
    except TypeError as exc:
        if "argument" in str(exc):
            raise TargetError(
                f"{target} needs arguments to build ({describe(exc)})",
                "wrap it in a zero-argument function that builds the model you want audited",
            ) from None
        raise TargetError(f"building {target} raised {describe(exc)}", "fix the factory") from None
    except Exception as exc:
        raise TargetError(f"building {target} raised {describe(exc)}", "fix the factory") from None
    if not isinstance(model, nn.Module):
        raise TargetError(
            f"{target}() returned a {type(model).__name__}, not an nn.Module",
            "make the factory return the model",
        )
    return model


def load_target(target: str) -> nn.Module:
    where, attr = split_target(target)
    return build_model(resolve_attribute(import_source(where), attr, target), target)
