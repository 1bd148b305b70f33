"""Table 1 of the 2024 paper by the storage-function search (cvxpy), and its failure modes."""
import numpy as np
import pytest

import turnpike as tp
from turnpike.theory import (SteadySet, huber_template, optimal_steady_set, search_storage_function,
                             soft_ce_lower_bound, stage_cost_lower_bound)

R = 0.1
LABELS = np.array([0, 1])
TARGETS = np.array([[1.0, 0.0], [0.0, 1.0]])


@pytest.fixture(scope="module")
def samples():
    """A small system: architecture (1), n = 2, D = 2 samples; 120 random (x, u) pairs plus (x̄, 0)."""
    rng = np.random.default_rng(0)
    system = tp.SingleLayerResNet(state_dim=2, depth=1)
    states = rng.normal(0, 2, (120, 2, 2))
    controls = rng.normal(0, 1, (120, system.layer_parameter_count))
    states[0], controls[0] = TARGETS, 0.0           # a steady optimal pair of the L2 cost
    return system, states, controls


def recheck(certificate, system, states, controls, cost, steady):
    """Independent check of (10b) with the returned storage and α_ℓ = margin·φ."""
    successors = np.stack([system.rollout(u, x)[-1] for x, u in zip(states, controls)])
    stage = cost.state_per_sample(states, LABELS).mean(axis=1) + R * (controls ** 2).sum(axis=1)
    change = np.array([certificate.storage_value(f) - certificate.storage_value(x) for x, f in zip(states, successors)])
    phi = huber_template(steady.distance(states, controls, LABELS))
    return stage - steady.optimal_value - change - certificate.margin * phi


@pytest.mark.parametrize("basis", ["constant", "linear", "quadratic"])
def test_l2_tracking_is_strictly_dissipative(samples, basis):
    system, states, controls = samples
    cost = tp.L2Tracking(TARGETS) + tp.InputPenalty(R)
    certificate = search_storage_function(system, cost, states, controls, LABELS, basis=basis)
    assert certificate.certified, certificate.reason
    # ℓ = ‖x - x̄‖²/D + r‖u‖² >= min(1/D, r) s² >= 2 min(1/D, r) φ(s): constant storage already achieves it
    assert certificate.margin >= 2 * min(1 / 2, R) - 1e-7
    assert recheck(certificate, system, states, controls, cost, optimal_steady_set(cost)).min() >= -1e-7
    assert certificate.solver == "CLARABEL"


@pytest.mark.parametrize("basis", ["constant", "quadratic"])
def test_soft_cross_entropy_is_strictly_dissipative_with_constant_storage(samples, basis):
    system, states, controls = samples
    cost = tp.SoftCrossEntropy(num_classes=2, p_d=0.9) + tp.InputPenalty(R)
    certificate = search_storage_function(system, cost, states, controls, LABELS, basis=basis)
    assert certificate.certified, certificate.reason
    alpha = soft_ce_lower_bound(2, 0.9)
    # Prop. 9: ℓ >= min(α(s)/D, r s²) >= min(λ/D, 2r) φ(s)
    assert certificate.margin >= min(alpha.curvature / 2, 2 * R) - 1e-9
    steady = optimal_steady_set(cost)
    assert "X*_y" in steady.description
    assert recheck(certificate, system, states, controls, cost, steady).min() >= -1e-7


def test_plain_cross_entropy_has_no_certificate_and_says_why(samples):
    system, states, controls = samples
    cost = tp.CrossEntropy(num_classes=2) + tp.InputPenalty(R)
    certificate = search_storage_function(system, cost, states, controls, LABELS, basis="quadratic")
    assert not certificate.certified
    assert "Lemma 2" in certificate.reason and "no minimiser" in certificate.reason
    values = certificate.evidence["cross_entropy_along_ray"]
    assert all(a > b > 0 for a, b in zip(values, values[1:]))      # decreasing to 0, never reaching it
    with pytest.raises(ValueError, match="Lemma 2"):
        stage_cost_lower_bound(cost, 2)


def test_a_wrong_steady_set_is_refuted_with_the_violating_samples(samples):
    """(10b) w.r.t. a point that is not the minimiser fails: the sample (x̄, 0) has ℓ = 0 but dist > 0."""
    system, states, controls = samples
    cost = tp.L2Tracking(TARGETS) + tp.InputPenalty(R)
    wrong = SteadySet("a wrong point", lambda x, labels: np.sqrt(((np.asarray(x) - 0.5) ** 2).sum(-1)))
    for basis in ("constant", "quadratic"):
        certificate = search_storage_function(system, cost, states, controls, LABELS, basis=basis, steady_set=wrong)
        assert not certificate.certified
        assert certificate.margin <= 1e-6
        assert 0 in [v["sample"] for v in certificate.violations]
        assert "block" in certificate.reason


def test_scs_solver_gives_the_same_verdict(samples):
    system, states, controls = samples
    cost = tp.SoftCrossEntropy(num_classes=2, p_d=0.9) + tp.InputPenalty(R)
    clarabel = search_storage_function(system, cost, states, controls, LABELS, basis="linear")
    scs = search_storage_function(system, cost, states, controls, LABELS, basis="linear", solver="SCS")
    assert scs.certified and scs.solver == "SCS"
    assert scs.margin == pytest.approx(clarabel.margin, rel=0.05)


@pytest.mark.parametrize("change, argument", [
    (dict(basis="cubic"), "basis"),
    (dict(solver="MOSEK"), "solver"),
    (dict(controls=np.zeros((3, 6))), "controls"),
    (dict(labels=np.zeros(3, int)), "labels"),
])
def test_search_bad_arguments(samples, change, argument):
    system, states, controls = samples
    arguments = dict(system=system, stage_cost=tp.L2Tracking(TARGETS) + tp.InputPenalty(R), states=states,
                     controls=controls, labels=LABELS)
    arguments.update(change)
    with pytest.raises(ValueError, match=argument):
        search_storage_function(**arguments)
