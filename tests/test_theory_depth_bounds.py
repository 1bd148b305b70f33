"""Theorems 1-2 of the 2025 paper and Tables 2-3 (turnpike/theory/_depth_bounds.py)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnpike.theory import (ExitLosses, average_exit_loss, average_loss_bound, average_loss_constant,
                             depth_bound_table, format_depth_bound_table, objective_bound, stage_cost_objective)

GAMMA, N = 0.02, 54          # Appendix A.1: γ = 0.02 for all experiments; ResNet-54


def network_with(objective, average, gamma=GAMMA, depth=N):
    """Exit losses of a ResNet-N with the given J_N (no decay) and L_avg: all equal but the output."""
    # (N y + x)/(N+1) = average and γ N y + x = objective
    y = ((depth + 1) * average - objective) / (depth * (1 - gamma))
    x = objective - gamma * depth * y
    return ExitLosses(np.append(np.full(depth, y), x))


@pytest.mark.parametrize("table, sub_loss, objective, average, printed", [
    # Table 2 (standard ResNet), M = 0: L̄, J_N, J̄, J̄-J, L_avg, L̄_avg, L̄_avg-L_avg
    ("2", 1.326, 0.570, 0.340, (2.758, 2.187, 2.507, 2.167)),
    # Table 3 (homogeneous ResNet), M = 0
    ("3", 1.188, 0.245, 0.087, (2.470, 2.225, 2.246, 2.159)),
])
def test_reproduces_the_M0_rows_of_tables_2_and_3(table, sub_loss, objective, average, printed):
    sub = ExitLosses([sub_loss])
    assert objective_bound(sub, gamma=GAMMA, depth=N) == pytest.approx(printed[0], abs=2e-3)
    assert average_loss_bound(sub, gamma=GAMMA, depth=N) == pytest.approx(printed[2], abs=1e-3)
    assert average_loss_constant(sub, gamma=GAMMA) == pytest.approx(49 * sub_loss)    # (1-γ)/γ L̄
    [row] = depth_bound_table(network_with(objective, average), [sub], gamma=GAMMA)
    assert row.objective == pytest.approx(objective) and row.average_loss == pytest.approx(average)
    assert row.objective_gap == pytest.approx(printed[1], abs=2e-3)
    assert row.average_gap == pytest.approx(printed[3], abs=1e-3)
    assert row.holds


def test_exact_values_of_the_issue_example():
    sub = ExitLosses([1.326])
    assert objective_bound(sub, gamma=0.02, depth=54) == pytest.approx((1 + 0.02 * 54) * 1.326, rel=1e-12)
    assert round(objective_bound(sub, gamma=0.02, depth=54), 3) == 2.758
    assert round(average_loss_bound(sub, gamma=0.02, depth=54), 3) == 2.507


def test_printed_gap_columns_are_bound_minus_measured_for_every_row():
    """Tables 2-3 print J̄ - J and L̄_avg - L_avg with J = 0.570/0.245 and L_avg = 0.340/0.087 in every row."""
    table2 = [(2.758, 2.187, 2.507, 2.167), (1.173, 0.603, 21.238, 20.898), (1.186, 0.616, 28.063, 27.723),
              (2.128, 1.558, 90.931, 90.591), (2.232, 1.662, 94.822, 94.483)]
    for bound, gap, avg_bound, avg_gap in table2:
        assert bound - 0.570 == pytest.approx(gap, abs=1.5e-3)
        assert avg_bound - 0.340 == pytest.approx(avg_gap, abs=1.5e-3)


def test_bound_2_of_the_tables_is_inconsistent_with_bound_1_for_M_at_least_6():
    """Row M = 6 of Table 2: Bound 1 caps Σ_{k<6} L(ŷ_k^6) at (J̄ - (1+γ(N-M))L̄)/γ = 26.6, so Theorem 2's
    L̄_avg can be at most ~1.07, not the printed 21.238 (which needs Σ L = 1136; it matches Σ L/γ)."""
    M, sub_loss, printed_bound, printed_average = 6, 0.327, 1.173, 21.238
    largest_sum = (printed_bound - (1 + GAMMA * (N - M)) * sub_loss) / GAMMA
    sub = ExitLosses(np.append(np.full(M, largest_sum / M), sub_loss))
    assert objective_bound(sub, gamma=GAMMA, depth=N) == pytest.approx(printed_bound)
    assert average_loss_bound(sub, gamma=GAMMA, depth=N) == pytest.approx(1.07, abs=0.01)
    implied_sum = (printed_average - sub_loss) * (N + 1) - (1 - GAMMA - GAMMA * M) / GAMMA * sub_loss
    assert implied_sum == pytest.approx(1136, abs=1)
    assert implied_sum > 40 * largest_sum                  # inconsistent with Bound 1 of the same row
    assert GAMMA * implied_sum <= largest_sum              # consistent if the table used Σ L(ŷ_k^M)/γ


@settings(deadline=None, max_examples=40)
@given(st.integers(0, 20), st.integers(0, 30), st.floats(0.001, 1.0), st.floats(0.0, 0.1), st.integers(0, 2**32 - 1))
def test_bounds_are_the_objective_of_the_extended_subresnet(M, extra, gamma, decay, seed):
    """The proofs' construction: ResNet-M's blocks, then zero residual branches, so every exit k >= M sees L̄.
    Its J_N equals J̄_N (Theorem 1) and its L_avg is <= L̄_avg (Theorem 2, γ <= 1)."""
    rng = np.random.default_rng(seed)
    depth = M + extra if M + extra >= 1 else 1
    losses = rng.uniform(0, 3, M + 1)
    norms = rng.uniform(0, 5, M)
    sub = ExitLosses(losses, norms)
    extended = ExitLosses(np.append(losses, np.full(depth - M, losses[-1])), np.append(norms, np.zeros(depth - M)))
    assert stage_cost_objective(extended, gamma=gamma, decay=decay) == pytest.approx(
        objective_bound(sub, gamma=gamma, depth=depth, decay=decay), rel=1e-12, abs=1e-12)
    assert average_exit_loss(extended) <= average_loss_bound(sub, gamma=gamma, depth=depth) + 1e-12


def test_table_layout_and_order():
    network = network_with(0.570, 0.340)
    rows = depth_bound_table(network, [ExitLosses([0.5] * 7 + [0.327]), ExitLosses([1.326])], gamma=GAMMA)
    assert [r.sub_depth for r in rows] == [0, 7]
    text = format_depth_bound_table(rows)
    assert text.splitlines()[0].startswith("| SubResNet depth M | L̄ |")
    assert "| 0 | 1.326 | 0.570 | 2.758 |" in text


@pytest.mark.parametrize("call, argument", [
    (lambda: average_loss_bound(ExitLosses([1.0]), gamma=1.5, depth=3), "gamma"),
    (lambda: objective_bound(ExitLosses([1.0, 1.0, 1.0]), gamma=0.1, depth=1), "depth"),
    (lambda: ExitLosses([1.0, -1.0]), "losses"),
    (lambda: ExitLosses([1.0, 1.0], [1.0, 2.0]), "weight_norms_sq"),
    (lambda: objective_bound(ExitLosses([1.0]), gamma=0.0, depth=3), "gamma"),
])
def test_bad_arguments(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
