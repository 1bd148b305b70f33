"""Analysis of trained networks: soft cross-entropy geometry (2024 paper, Sec. 3)."""
from ._soft_ce import distance_to_minimisers, minimiser_offset, minimiser_points, project_mean_zero

__all__ = ["distance_to_minimisers", "minimiser_offset", "minimiser_points", "project_mean_zero"]
