"""Dissipation margins and the Prop. 12 bound on a trained two-spirals solution, and `turnpike certify`."""
import json
import math

import numpy as np
import pytest

import turnpike as tp
from turnpike.cli import main
from turnpike.theory import (dissipation_margins, distance_to_minimisers, fit_reachability, layer_distances,
                             soft_ce_lower_bound, turnpike_bound)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("spirals-certify")
    metrics = tp.experiments.run_spirals(tp.experiments.SpiralsConfig(seed=0, baseline=False), out, plots=False)
    return out, metrics["solutions"]["stage_cost"]


def test_dissipation_inequality_holds_at_every_layer(trained):
    _, solution = trained
    report = dissipation_margins(solution)
    assert report.holds and report.margin.shape == (solution.depth,)
    assert np.all(report.margin >= 0) and report.min_sample_margin >= -1e-12
    # independent recomputation: ℓ_k - α_ℓ(dist_k), α_ℓ(s) = min(α(s)/D, r s²), constant storage
    states, labels = solution.train_states, solution.ocp.labels
    D = states.shape[1]
    soft = solution.ocp.soft_cross_entropy()
    alpha = soft_ce_lower_bound(2, soft.p_d)
    norms = solution.control_norms()
    d = distance_to_minimisers(states[:-1], labels, 2, soft.p_d)
    s = np.sqrt((d ** 2).sum(1) + norms ** 2)
    stage = soft.per_sample(states[:-1], labels).mean(1) + 0.005 * norms ** 2
    expected = stage - np.minimum(alpha(s) / D, 0.005 * s ** 2)
    np.testing.assert_allclose(report.margin, expected, rtol=1e-9, atol=1e-15)
    assert report.as_dict()["holds"] is True


def test_a_storage_that_breaks_the_inequality_is_reported(trained):
    _, solution = trained
    report = dissipation_margins(solution, storage=lambda x: -1e3 * float(np.sum(x ** 2)))
    assert not report.holds and report.margin.min() < 0


def test_plain_cross_entropy_solution_is_refused_with_the_reason():
    inputs, labels = tp.data.two_spirals(40, turns=1.0)
    ocp = tp.OCP(tp.SingleLayerResNet(state_dim=2, depth=3), inputs, labels,
                 stage_cost=tp.CrossEntropy(num_classes=2) + tp.InputPenalty(0.01),
                 terminal_cost=tp.CrossEntropy(num_classes=2))
    solution = tp.solve_ocp(ocp, steps=3, progress=False)
    with pytest.raises(ValueError, match="Lemma 2"):
        dissipation_margins(solution)


def test_turnpike_count_respects_the_prop_12_bound(trained):
    _, solution = trained
    start = solution.distance_to_turnpike()[0]
    D, N = solution.train_states.shape[1], solution.depth
    distances = layer_distances(solution)
    for fraction in (0.05, 0.1, 0.2, 0.5):
        eps = fraction * start
        report = turnpike_bound(solution, eps)
        assert report.holds
        assert report.measured <= report.value_bound <= report.bound
        # conventions: paper's Q̄_ε (state-input, 0..N-1) vs Solution.turnpike_set (RMS state, 0..N)
        assert report.eps_stacked == pytest.approx(math.sqrt(D) * eps)
        assert list(report.outside) == [k for k in range(N) if distances[k] > math.sqrt(D) * eps]
        state_only_outside = set(range(N + 1)) - set(solution.turnpike_set(eps))
        assert {k for k in state_only_outside if k < N} <= set(report.outside)
        assert report.measured_state_only == len(state_only_outside)
        # the fitted reachability constants bound the reference trajectory (Assumption 10, k = 0..N)
        assert np.all(distances <= report.beta * report.rho ** np.arange(N + 1) * (1 + 1e-12))
        assert report.objective <= report.v_hat
        assert report.objective == pytest.approx(solution.objective, rel=1e-6)


def test_bound_is_violated_by_a_fake_reachability_constant(trained):
    """The check can fail: with β far too small V̂ < J, and the count exceeds V̂/α."""
    _, solution = trained
    eps = 0.1 * solution.distance_to_turnpike()[0]
    report = turnpike_bound(solution, eps, beta=1e-9, rho=0.5)
    assert report.measured > report.bound and not report.holds


def test_fit_reachability():
    beta, rho = fit_reachability(3.0 * 0.5 ** np.arange(20))
    assert rho == pytest.approx(0.5, abs=1e-3) and beta == pytest.approx(3.0, rel=1e-2)
    beta, rho = fit_reachability(np.array([2.0, 1.0, 0.0, 0.0]))
    assert np.all(np.array([2.0, 1.0, 0.0, 0.0]) <= beta * rho ** np.arange(4) + 1e-12)
    assert fit_reachability(np.zeros(3)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="distances"):
        fit_reachability(np.array([1.0, -1.0]))


def test_certify_cli_prints_and_writes_the_reports(trained, capsys):
    out, solution = trained
    assert (out / "controls.npz").is_file()
    np.testing.assert_array_equal(np.load(out / "controls.npz")["stage_cost"], solution.controls)
    assert main(["certify", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "holds at every layer: True" in printed and "Prop. 12" in printed and "V̂/α" in printed
    report = json.loads((out / "certificate.json").read_text())
    run = report["runs"]["stage_cost"]
    assert run["dissipation"]["holds"] is True
    assert len(run["turnpike_bounds"]) == 4 and all(r["holds"] for r in run["turnpike_bounds"])
    assert run["turnpike_bounds"][1]["measured_state_only"] == solution.depth + 1 - len(
        solution.turnpike_set(run["turnpike_bounds"][1]["eps"]))
    assert report["lipschitz"]["paper"] == 4


def test_certify_cli_refuses_a_folder_without_controls(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["certify", str(tmp_path)]) == 2
    assert "controls.npz" in capsys.readouterr().err
