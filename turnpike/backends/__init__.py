"""Backends: how a system's parameters are stored, differentiated, stepped and saved.

- :class:`FlatBackend` — one flat control vector θ (ResNets (1)/(26), the neural ODE):
  analytic adjoint sweeps, autograd, the system's own objective; Adam/SGD steppers, L-BFGS.
- :class:`ModuleBackend` — a ``torch.nn.Module`` system (the convolutional ResNet): autograd,
  ``torch.optim`` with parameter groups and schedules, BatchNorm buffers, augmentation, devices.

The system's type chooses: :func:`make_backend` trains a ModuleSystem with the module backend, a FlatSystem
with the flat one.
"""
from collections.abc import Mapping
from dataclasses import fields

from .. import _checks
from .._ocp import OCP
from .._objective import objective_tensor
from ._engines import autograd_objective
from ._flat import ENGINES, Engine, FlatBackend, FlatSettings, available_engines
from ._optimizers import METHODS, method_schedule, with_learning_rate
from ._protocol import Backend, LoopMethod, Method, StepMethod
from ._schedules import learning_rate
from ..systems._protocol import FlatSystem, ModuleSystem

__all__ = ["Backend", "COMPILE_MODES", "ENGINES", "Engine", "FlatBackend", "FlatSettings", "LoopMethod",
           "METHODS", "MODULE_METHODS", "Method", "ModuleBackend", "ModuleSettings", "StepMethod", "autograd_objective",
           "available_engines", "learning_rate", "make_backend", "method_schedule", "objective_tensor", "with_learning_rate"]


def __getattr__(name):
    # the module backend (and torch.distributed with it) loads only when a module system is solved
    if name in ("COMPILE_MODES", "MODULE_METHODS", "ModuleSettings"):
        from . import _module_settings
        return getattr(_module_settings, name)
    if name == "ModuleBackend":
        from ._module import ModuleBackend
        return ModuleBackend
    raise AttributeError(f"module 'turnpike.backends' has no attribute {name!r}")


def _module_backend():
    from ._module import ModuleBackend
    return ModuleBackend


#: (system class, what errors call its kind, a function giving its backend class): the system's type chooses
_KINDS = ((ModuleSystem, "module", _module_backend), (FlatSystem, "flat", lambda: FlatBackend))


def backend_for(system) -> tuple:
    """(kind, backend class) of ``system``, chosen by its type: a ModuleSystem or a FlatSystem."""
    for kind, label, backend in _KINDS:
        if isinstance(system, kind):
            return label, backend()
    _checks.fail("system", "a turnpike system (a FlatSystem or a ModuleSystem)", system)


def system_streams(system) -> bool:
    """Whether the system's backend reads a ``torch.utils.data.Dataset`` (the module backend's)."""
    return isinstance(system, ModuleSystem)


def make_backend(ocp, *, seed, batch_size, device, test_data=None, settings=None):
    """The backend of the OCP's system kind, set up for one solve.

    ``settings``: the kind's own (``FlatSettings``, ``ModuleSettings``, by name); one of another kind
    is refused, naming it and the system, since it would do nothing there.
    """
    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP(system, inputs, labels, ...)")
    seed = _checks.integer("seed", seed, minimum=0)
    if batch_size is not None:
        batch_size = _checks.integer("batch_size", batch_size, minimum=1)
    device = _checks.device("device", device)
    streams = system_streams(ocp.system)
    if test_data is not None and not (streams and _checks.is_dataset(test_data)) \
            and (not isinstance(test_data, (tuple, list)) or len(test_data) != 2):
        _checks.fail("test_data", "a pair (inputs, labels)" + (" or a torch.utils.data.Dataset of (image, label) "
                                                                "pairs" if streams else ""), test_data)
    if settings is not None and not isinstance(settings, Mapping):
        _checks.fail("settings", "a dict of the system kind's settings", settings)
    system = ocp.system
    kind, backend = backend_for(system)
    settings = dict(settings or {})
    own = [f.name for f in fields(backend.Settings)]
    for name in settings:
        if name not in own:
            others = [label for _, label, other in _KINDS if name in {f.name for f in fields(other().Settings)}]
            got = f"one of the {others[0]} systems' backend options" if others else "an unknown setting"
            raise ValueError(f"{name}: expected one of the settings of the {kind} system "
                             f"{type(system).__name__} ({', '.join(own)}), got {got}")
    return backend(ocp, seed=seed, batch_size=batch_size, device=device, test_data=test_data,
                   settings=backend.Settings(**settings))
