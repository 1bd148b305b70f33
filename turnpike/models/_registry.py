"""The models ``turnpike train --model`` names: a built-in model, ``PACKAGE.MODULE:FACTORY`` or ``FILE.py:FACTORY``.

A factory is any callable returning the user's ``torch.nn.Module``: a network with torchvision's ResNet layout
(wrapped by :func:`turnpike.residual_network`) or a :class:`turnpike.ResidualNetwork` built with the generic form.
It is called with the keywords it accepts of ``num_classes`` and ``in_channels`` (the data's), and with the
options the user gives (``--model-option KEY=VALUE``), each of which it must accept.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable

from torch import nn

from .._checks import fail
from ._torchvision_layout import (ResNet, resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d,
                                  wide_resnet50_2)

__all__ = ["BUILT_IN_MODELS", "build_model", "model_factory"]

#: the built-in models by name (torchvision's ResNet layout; see turnpike.models)
BUILT_IN_MODELS = {factory.__name__: factory for factory in (
    resnet18, resnet34, resnet50, resnet101, resnet152, wide_resnet50_2, resnext50_32x4d)}

_FORMS = "a built-in model ({}), PACKAGE.MODULE:FACTORY or FILE.py:FACTORY"


def _expected() -> str:
    return _FORMS.format(", ".join(BUILT_IN_MODELS))


def _module_of_file(path: Path, spec: str):
    if not path.is_file():
        fail("model", f"{_expected()} with FILE an existing Python file", spec)
    name = f"_turnpike_user_model_{abs(hash(str(path.resolve())))}"
    if name not in sys.modules:
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _importable(name: str, spec: str):
    """The module ``name``, found like ``python -m`` finds it: the current folder first, then sys.path."""
    here = str(Path.cwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not (name == error.name or name.startswith(error.name + ".")):
            raise                              # the user's module imports something missing: their traceback
        fail("model", f"{_expected()} with an importable MODULE (searched the current folder and sys.path; "
                      f"no module named {error.name!r})", spec)
    finally:
        if added:
            sys.path.remove(here)


def model_factory(spec: str) -> Callable:
    """The factory ``spec`` names (see the module docstring); a ValueError says which part did not resolve."""
    if not isinstance(spec, str) or not spec.strip():
        fail("model", _expected(), spec)
    if spec in BUILT_IN_MODELS:
        return BUILT_IN_MODELS[spec]
    where, colon, attribute = spec.rpartition(":")
    if not colon or not where or not attribute:
        fail("model", _expected(), spec)
    module = _module_of_file(Path(where), spec) if where.endswith(".py") else _importable(where, spec)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            fail("model", f"{_expected()}, with FACTORY defined in {where}", spec)
        factory = getattr(factory, part)
    if not callable(factory):
        fail("model", f"{_expected()}, FACTORY a callable returning a torch.nn.Module", spec)
    return factory


def build_model(spec: str, *, num_classes: int, in_channels: int, options: dict | None = None) -> nn.Module:
    """``model_factory(spec)(**keywords)``: ``num_classes`` and ``in_channels`` where the factory accepts them,
    and every entry of ``options`` (a ValueError names one it does not accept, with the ones it does)."""
    options = {} if options is None else options
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        fail("model_options", "a dict of keyword arguments of the model's factory", options)
    factory = model_factory(spec)
    try:
        parameters = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):            # a builtin without a signature: pass what the user gave
        parameters = {}
    if spec in BUILT_IN_MODELS:                # resnet18(**options): ResNet's options, less what fixes the model
        parameters = {name: p for name, p in inspect.signature(ResNet).parameters.items()
                      if name not in ("block", "layers", "groups", "width_per_group")}
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [name for name, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = [key for key in options if key not in named and not any_keyword]
    if unknown:
        fail("model_options", f"keywords that {spec} accepts ({', '.join(named) or 'none'})", ", ".join(unknown))
    keywords = {key: value for key, value in (("num_classes", num_classes), ("in_channels", in_channels))
                if (key in named or any_keyword) and key not in options}
    try:
        model = factory(**keywords, **options)
    except Exception as error:                              # noqa: BLE001 (the user's code: any failure)
        given = ", ".join(f"{key}={value!r}" for key, value in {**keywords, **options}.items())
        fail("model", f"a factory that builds the model, got {spec}({given}) raising {type(error).__name__}: "
                      f"{' '.join(str(error).split())}", spec)
    if not isinstance(model, nn.Module):
        fail("model", f"a factory returning a torch.nn.Module ({spec} returned a {type(model).__name__})", spec)
    return model
