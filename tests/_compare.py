"""Shared assertions of the test suite."""
import numpy as np
import pytest


def assert_same_objective(result, reference, *, rtol=1e-9, atol=1e-12):
    """Two (J, ∇J) pairs agree: J to 1e-12 relative, the gradients to ``rtol``/``atol``."""
    (value, gradient), (reference_value, reference_gradient) = result, reference
    assert value == pytest.approx(reference_value, rel=1e-12)
    np.testing.assert_allclose(gradient, reference_gradient, rtol=rtol, atol=atol)
