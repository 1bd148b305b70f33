"""What a solve returns, built from the OCP, the trained parameters and the history through the
systems' public methods.

- :class:`Solution`: a flat system's controls, every layer's states and the turnpike answers;
  :class:`ODESolution` adds a neural ODE's dense-time answers (Prop. 16);
- :class:`ModuleSolution`: a module system's per-exit metrics and the turnpike of its exits;
- :class:`Status`: how a solve ended.

:func:`solution_type` is the map from a flat system to its result class.
"""
from ..systems import NeuralODE
from ._module import ModuleSolution
from ._ode import ODESolution, exceedance_intervals
from ._solution import Network, Solution, SolutionOutcome, Status, layer_statistics, turnpike_layer_of

__all__ = ["ModuleSolution", "Network", "ODESolution", "Solution", "SolutionOutcome", "Status",
           "exceedance_intervals", "layer_statistics", "solution_type", "turnpike_layer_of"]


def solution_type(system) -> type:
    """The :class:`Solution` class a solve of the flat ``system`` returns: :class:`ODESolution` for a
    neural ODE (times, dense states), else :class:`Solution`."""
    return ODESolution if isinstance(system, NeuralODE) else Solution
