"""Backends: how a system's parameters are stored, differentiated, stepped and saved.

- :class:`FlatBackend` — one flat control vector θ (ResNets (1)/(26), the neural ODE):
  analytic adjoint sweeps, autograd, the system's own objective; Adam/SGD steppers, L-BFGS.
- :class:`ModuleBackend` — a ``torch.nn.Module`` system (the convolutional ResNet): autograd,
  ``torch.optim`` with parameter groups and schedules, BatchNorm buffers, augmentation, devices.

The system chooses: :func:`make_backend` reads the ``backend`` it declares.
"""
from ._engines import objective_tensor
from ._flat import ENGINES, Engine, FlatBackend, available_engines, check_test_data
from ._protocol import Backend, Method

__all__ = ["BACKENDS", "Backend", "ENGINES", "Engine", "FlatBackend", "Method", "available_engines", "make_backend",
           "objective_tensor"]


def _module_backend():
    from ._module import ModuleBackend
    return ModuleBackend


#: backend name (``System.backend``) -> a function giving the backend class
BACKENDS = {"flat": lambda: FlatBackend, "module": _module_backend}


def make_backend(ocp, *, seed, batch_size, engine, dtype, device, init_scale, initial_controls, test_data,
                 options: dict):
    """The backend the OCP's system declares, set up for one solve."""
    from .. import _checks

    kind = ocp.system.backend
    if kind == "flat":
        if options:
            _checks.fail("backend options", "none for a flat system (they are settings of module systems)",
                         sorted(options))
        init_scale = _checks.real("init_scale", init_scale, minimum=0.0)
        backend = FlatBackend(ocp, seed=seed, batch_size=batch_size, engine=engine, dtype=dtype, device=device,
                              init_scale=init_scale, initial_controls=initial_controls)
        backend.test_data = check_test_data(ocp, test_data)
        return backend
    return BACKENDS[kind]()(ocp, seed=seed, batch_size=batch_size, device=device, test_data=test_data,
                            **options)
