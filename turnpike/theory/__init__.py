"""Analysis of trained networks (2024 paper, Sec. 3-4; 2025 paper, Appendix B).

Soft cross-entropy geometry (Lemmas 3-8), strict dissipativity (Def. 1, Prop. 9, Table 1),
turnpike counts (Prop. 12) and the depth bounds of Theorems 1-2. The Hessian of a training objective
(dense, Lanczos, spectral measures; flat and module systems, the Hessian at initialisation against depth
of convolutional ResNets) and Theorem 2 of the Demystifying-ResNet paper (the Hessian of an
n-shortcut network at zero). Notes: ``theory/``.
"""
from ._depth_bounds import (DepthBoundRow, ExitLosses, average_exit_loss, average_loss_bound, average_loss_constant,
                            depth_bound_table, format_depth_bound_table, objective_bound, stage_cost_objective)
from ._dissipativity import (DissipationReport, StageCostLowerBound, SteadySet, dissipation_margins,
                             optimal_steady_set, stage_cost_lower_bound)
from ._storage import StorageCertificate, huber_template, search_storage_function
from .._objective import module_parameters_vector
from ._hessian import (DENSE_LIMIT, EIGENVALUE_SELECTIONS, HessianSpectrum, directional_derivatives, extreme_eigenvalues,
                       hessian, hessian_vector_product)
from ._module_hessian import (INITIALISATIONS, InitialisationSpectrum, InitialisationSpectrumRow,
                              initialisation_spectrum)
from ._lower_bound import (SoftCELowerBound, curvature_bound, lipschitz_constant, soft_ce_hessian,
                           soft_ce_lower_bound, tangent_slope)
from ._shortcut import (LeastSquaresSummary, leading_derivative, least_squares_summary, regression_ocp,
                        theorem2_condition_number, theorem2_hessian, theorem2_matrix)
from ._soft_ce import distance_to_minimisers, minimiser_offset, minimiser_points, project_mean_zero
from ._turnpike_bound import TurnpikeBoundReport, fit_reachability, layer_distances, turnpike_bound

__all__ = [
    "DENSE_LIMIT", "EIGENVALUE_SELECTIONS", "HessianSpectrum", "INITIALISATIONS", "InitialisationSpectrum",
    "InitialisationSpectrumRow", "LeastSquaresSummary", "directional_derivatives", "extreme_eigenvalues", "hessian",
    "hessian_vector_product", "initialisation_spectrum", "module_parameters_vector", "leading_derivative", "least_squares_summary",
    "regression_ocp", "theorem2_condition_number", "theorem2_hessian", "theorem2_matrix",
    "DepthBoundRow", "DissipationReport", "ExitLosses", "SoftCELowerBound", "StageCostLowerBound", "SteadySet",
    "StorageCertificate", "TurnpikeBoundReport", "average_exit_loss", "average_loss_bound", "average_loss_constant",
    "curvature_bound", "depth_bound_table", "dissipation_margins", "distance_to_minimisers", "fit_reachability",
    "format_depth_bound_table", "huber_template", "layer_distances", "lipschitz_constant", "minimiser_offset",
    "minimiser_points", "objective_bound", "optimal_steady_set", "project_mean_zero", "search_storage_function",
    "soft_ce_hessian", "soft_ce_lower_bound", "stage_cost_lower_bound", "stage_cost_objective", "tangent_slope",
    "turnpike_bound",
]
