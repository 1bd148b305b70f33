"""Hessians of module systems (issue 22): objective_tensor, hessian, hessian_vector_product, extreme_eigenvalues
and directional_derivatives on convolutional ResNets (turnpike.preact_resnet, turnpike.residual_network).

Every check is against something computed another way: Hessian-vector products against double backward
through the module's own forward pass with its own parameters (no functional_call, no turnpike costs), J
against the module backend's, the dense Hessian against Lanczos. Tiny float64 networks on 6×6 images.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import turnpike as tp
from turnpike import theory
from turnpike.backends import make_backend

C = 3
GAMMA, DECAY, STAGE_WEIGHT = 0.3, 0.02, 2.0


def images(count=8, channels=1, seed=0, size=6):
    generator = torch.Generator().manual_seed(100 + seed)
    return torch.randn(count, channels, size, size, generator=generator, dtype=torch.float64)


def labels(count=8):
    return np.arange(count) % C


def warmed(net, channels):
    """Running statistics away from their initial (0, 1), so that "eval" and "train" differ."""
    net.train()
    with torch.no_grad():
        for seed in range(3):
            net(images(8, channels, seed=10 + seed) * 1.5 + 0.3, all_exits=True)
    return net


def preact(*, zero_branches=False, seed=0, blocks=1):
    torch.manual_seed(seed)
    net = tp.preact_resnet(blocks_per_stage=blocks, widths=(4, 4), num_classes=C, in_channels=1,
                           zero_branches=zero_branches).double()
    return net


def resnet18():
    torch.manual_seed(1)
    return tp.residual_network(tp.models.resnet18(num_classes=C, base=2, small_stem=True).double())


NETWORKS = {"preact": (lambda: warmed(preact(), 1), 1), "resnet18": (lambda: warmed(resnet18(), 3), 3)}


@functools.cache
def network(name):
    return NETWORKS[name][0]()


def problem(net, channels, stage: bool):
    loss = tp.CrossEntropy(num_classes=C)
    stage_cost = GAMMA * loss + tp.InputPenalty(DECAY) if stage else tp.InputPenalty(DECAY)
    return tp.OCP(net, images(8, channels), labels(), stage_cost=stage_cost, terminal_cost=loss,
                  stage_weight=STAGE_WEIGHT)


def state_of(net):
    return {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}


def reference_hessian_vector_product(net, inputs, targets, vector, *, mode, stage):
    """H v by double backward through the module's own forward pass and its own parameters, J written out:
    J = w_s γ Σ_{k<N} CE(E_k) + CE(E_N) + w_s r Σ‖p‖²."""
    saved = state_of(net)
    flags = [(m, m.training) for m in net.modules()]
    net.train(mode == "train")
    params = [p for p in net.parameters() if p.requires_grad]
    targets = torch.as_tensor(targets)
    if stage:
        logits = net(inputs, all_exits=True)
        value = sum(STAGE_WEIGHT * GAMMA * F.cross_entropy(logits[k], targets) for k in range(net.depth))
        value = value + F.cross_entropy(logits[-1], targets)
    else:
        value = F.cross_entropy(net(inputs), targets)
    value = value + STAGE_WEIGHT * DECAY * sum((p * p).sum() for p in params)
    gradient = torch.autograd.grad(value, params, create_graph=True)
    pieces = torch.split(torch.as_tensor(vector), [p.numel() for p in params])
    inner = sum((g * v.view_as(g)).sum() for g, v in zip(gradient, pieces))
    product = torch.autograd.grad(inner, params)
    net.load_state_dict(saved)               # the forward pass in training mode moved the statistics
    for module, flag in flags:
        module.training = flag
    return torch.cat([p.reshape(-1) for p in product]).numpy(), float(value.detach())


# --- (1) Hessian-vector products against double backward on the module -----------------------------------
@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("stage", [True, False], ids=["stage", "terminal"])
def test_hessian_vector_product_is_double_backward_on_the_module(name, mode, stage):
    net, channels = network(name), NETWORKS[name][1]
    ocp = problem(net, channels, stage)
    size = sum(p.numel() for p in net.parameters())
    vector = np.random.default_rng(0).normal(size=size)
    expected, value = reference_hessian_vector_product(net, ocp.inputs, ocp.labels, vector, mode=mode, stage=stage)
    product = theory.hessian_vector_product(ocp, vector=vector, mode=mode)
    np.testing.assert_allclose(product, expected, rtol=1e-9, atol=1e-10 * np.abs(expected).max())
    theta = theory.module_parameters_vector(net)
    assert theta.dtype == torch.float64 and theta.shape == (size,)
    assert float(tp.objective_tensor(ocp, theta, mode=mode)) == pytest.approx(value, rel=1e-12)
    # the second derivative along v is vᵀHv (directional_derivatives nests autograd along the line)
    derivatives = theory.directional_derivatives(ocp, direction=vector, order=2, mode=mode)
    assert derivatives[1] == pytest.approx(float(vector @ expected), rel=1e-8)


def test_modes_differ_and_theta_moves_the_point():
    """"train" and "eval" are different objectives here (warmed statistics), and an explicit θ is used."""
    net = network("preact")
    ocp = problem(net, 1, True)
    theta = theory.module_parameters_vector(net)
    train = float(tp.objective_tensor(ocp, theta, mode="train"))
    assert abs(train - float(tp.objective_tensor(ocp, theta, mode="eval"))) > 1e-3
    moved = theta + 0.01 * torch.as_tensor(np.random.default_rng(1).normal(size=theta.numel()))
    assert float(tp.objective_tensor(ocp, moved, mode="train")) != pytest.approx(train, rel=1e-8)
    vector = np.random.default_rng(2).normal(size=theta.numel())
    at_moved = theory.hessian_vector_product(ocp, moved.numpy(), vector, mode="train")
    assert not np.allclose(at_moved, theory.hessian_vector_product(ocp, None, vector, mode="train"))


# --- (2) the dense Hessian and Lanczos -------------------------------------------------------------------
def test_dense_hessian_is_symmetric_and_its_extremes_are_lanczos():
    net = network("preact")
    ocp = problem(net, 1, True)
    matrix = theory.hessian(ocp, mode="train")
    size = sum(p.numel() for p in net.parameters())
    assert matrix.shape == (size, size)
    np.testing.assert_array_equal(matrix, matrix.T)
    column = np.zeros(size)
    column[17] = 1.0
    product = theory.hessian_vector_product(ocp, vector=column, mode="train")
    np.testing.assert_allclose(matrix[:, 17], product, rtol=1e-9, atol=1e-12 * np.abs(matrix).max())
    spectrum = theory.HessianSpectrum.of(matrix)
    values = theory.extreme_eigenvalues(ocp, count=2, which="both_ends", mode="train")
    np.testing.assert_allclose(values, spectrum.eigenvalues[[0, -1]], rtol=1e-7)
    assert spectrum.eigenvalues[0] < 0 < spectrum.eigenvalues[-1]      # indefinite away from a minimum


# --- (3) J is the module backend's ----------------------------------------------------------------------
@pytest.mark.parametrize("exits, gamma", [("ws", 0.2), ("full", 0.2), ("standard", 0.0)])
def test_objective_tensor_is_the_module_backends_objective(exits, gamma):
    """The OCP of the training recipe (objective (3): γ·CE per exit + CE + λ/2‖w‖²) on uint8 images that the
    backend normalises: J of objective_tensor at the module's parameters = the backend's J, both modes."""
    torch.manual_seed(3)
    net = tp.preact_resnet(widths=(4, 4), blocks_per_stage=(2, 2), in_channels=1, num_classes=C,
                           exits=exits).double()
    rng = np.random.default_rng(0)
    raw = torch.as_tensor(rng.integers(0, 256, (12, 1, 8, 8)).astype(np.uint8))
    loss = tp.CrossEntropy(num_classes=C)
    decay = tp.InputPenalty(1e-3 / 2)
    ocp = tp.OCP(net, raw, rng.integers(0, C, 12), stage_cost=decay if gamma == 0 else gamma * loss + decay,
                 terminal_cost=loss)
    backend = make_backend(ocp, seed=0, batch_size=None, device=torch.device("cpu"),
                           settings={"normalise": ((0.5,), (0.25,))})
    prepared = backend.prepare(ocp.inputs).double()
    targets = torch.as_tensor(ocp.labels)
    theta = theory.module_parameters_vector(net)
    with pytest.raises(ValueError, match="^ocp.inputs: expected floating-point images"):
        tp.objective_tensor(ocp, theta, mode="eval")                 # uint8: the OCP holds no normalisation
    warmed(net, 1)
    for mode in ("eval", "train"):
        ours = float(tp.objective_tensor(ocp, theta, inputs=prepared, mode=mode))
        net.train(mode == "train")
        theirs = float(backend.objective(prepared, targets).detach())
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-14)
    net.train()


def test_weight_penalty_fused_and_smooth_agree_and_only_smooth_has_a_hessian_at_zero():
    from turnpike._objective import weight_penalty
    ocp = problem(network("preact"), 1, False)
    tensors = [torch.zeros(3, dtype=torch.float64, requires_grad=True),
               torch.linspace(-1, 2, 5, dtype=torch.float64, requires_grad=True)]
    fused, smooth = weight_penalty(ocp, tensors, fused=True), weight_penalty(ocp, tensors)
    assert float(fused.detach()) == pytest.approx(float(smooth.detach()), rel=1e-14)
    assert float(smooth.detach()) == pytest.approx(STAGE_WEIGHT * DECAY * float(tensors[1].detach().pow(2).sum()), rel=1e-14)
    gradient = torch.autograd.grad(smooth, tensors[0], create_graph=True)[0]
    second = torch.autograd.grad(gradient.sum(), tensors[0])[0]
    np.testing.assert_allclose(second.numpy(), 2 * STAGE_WEIGHT * DECAY)     # ∂²(r‖w‖²) = 2r, also at w = 0


# --- (4) the module is left as it was ------------------------------------------------------------------
def test_analysis_leaves_running_statistics_and_modes_unchanged():
    net = network("resnet18")
    ocp = problem(net, 3, True)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    net.train()
    norms[1].eval()                                                   # a mixed state is restored as it was
    flags = [m.training for m in net.modules()]
    before = state_of(net)
    size = sum(p.numel() for p in net.parameters())
    direction = np.random.default_rng(0).normal(size=size)
    for mode in ("train", "eval"):
        tp.objective_tensor(ocp, theory.module_parameters_vector(net), mode=mode)
        theory.hessian_vector_product(ocp, vector=direction, mode=mode)
        theory.directional_derivatives(ocp, direction=direction, order=2, mode=mode)
    theory.extreme_eigenvalues(ocp, count=2, mode="train", tolerance=1e-4)
    after = net.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    assert [m.training for m in net.modules()] == flags
    net.train()


def test_a_float32_module_is_analysed_in_float64_without_change():
    net32 = preact(seed=4).float()
    net64 = preact(seed=4)
    ocp32, ocp64 = problem(net32, 1, True), problem(net64, 1, True)
    vector = np.random.default_rng(0).normal(size=sum(p.numel() for p in net64.parameters()))
    theta = theory.module_parameters_vector(net32).numpy()           # the float32 values, exactly, in float64
    np.testing.assert_allclose(theory.hessian_vector_product(ocp32, theta, vector, mode="eval"),
                               theory.hessian_vector_product(ocp64, theta, vector, mode="eval"), rtol=1e-6)
    assert all(p.dtype == torch.float32 for p in net32.parameters())


# --- (5) bad inputs ----------------------------------------------------------------------------------
def test_bad_arguments_name_the_argument():
    net = network("preact")
    ocp = problem(net, 1, False)
    size = sum(p.numel() for p in net.parameters())
    theta = theory.module_parameters_vector(net)
    with pytest.raises(ValueError, match=r'^mode: expected "train" or "eval" for a module system .*, got None$'):
        theory.hessian_vector_product(ocp, vector=np.zeros(size))
    with pytest.raises(ValueError, match=r'^mode: expected "train" or "eval" .*, got None$'):
        tp.objective_tensor(ocp, theta)
    with pytest.raises(ValueError, match="^mode: .*got 'training'"):
        theory.extreme_eigenvalues(ocp, count=2, mode="training")
    with pytest.raises(ValueError, match=f"^theta: expected a flat vector of the module's {size} trainable"):
        theory.hessian_vector_product(ocp, np.zeros(size + 1), np.zeros(size), mode="eval")
    with pytest.raises(ValueError, match="^theta: expected a flat floating-point vector"):
        tp.objective_tensor(ocp, theta[:-1], mode="eval")
    with pytest.raises(ValueError, match="^theta: expected a torch tensor"):
        tp.objective_tensor(ocp, theta.numpy(), mode="eval")
    with pytest.raises(ValueError, match="^vector: expected a vector of"):
        theory.hessian_vector_product(ocp, vector=np.zeros(size - 1), mode="eval")
    with pytest.raises(ValueError, match="^vector: expected a vector of"):
        theory.hessian_vector_product(ocp, mode="eval")
    with pytest.raises(ValueError, match="^direction: expected a vector of"):
        theory.directional_derivatives(ocp, direction=np.zeros(3), order=2, mode="eval")
    with pytest.raises(ValueError, match="^order: expected an integer"):
        theory.directional_derivatives(ocp, direction=np.zeros(size), mode="eval")
    with pytest.raises(ValueError, match="^inputs: expected floating-point images"):
        theory.hessian_vector_product(ocp, vector=np.zeros(size), mode="eval",
                                      inputs=torch.zeros(8, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="^inputs: expected images of shape"):
        theory.hessian_vector_product(ocp, vector=np.zeros(size), mode="eval", inputs=torch.zeros(8, 2, 8, 8))
    with pytest.raises(ValueError, match="^labels: expected a 1-d array of 8"):
        theory.hessian_vector_product(ocp, vector=np.zeros(size), mode="eval", labels=np.zeros(7, dtype=int))
    with pytest.raises(ValueError, match="^ocp.system: expected at most max_parameters=100 parameters for a dense "
                                         "Hessian .*extreme_eigenvalues.*, got '675 parameters'"):
        theory.hessian(ocp, mode="eval", max_parameters=100)
    with pytest.raises(ValueError, match="^ocp.system: expected at most max_parameters=20000"):
        theory.hessian(problem(tp.preact_resnet(blocks_per_stage=1, widths=(24, 24), num_classes=C,
                                                in_channels=1).double(), 1, False), mode="eval")
    with pytest.raises(ValueError, match="^system: expected a module system"):
        theory.module_parameters_vector(tp.SingleLayerResNet(state_dim=3, depth=2))
    flat = tp.OCP(tp.SingleLayerResNet(state_dim=3, depth=2), np.zeros((4, 3)), [0, 1, 0, 1],
                  terminal_cost=tp.CrossEntropy(num_classes=2))
    with pytest.raises(ValueError, match="^mode: expected None for a flat system"):
        theory.hessian(flat, np.zeros(flat.system.parameter_count), mode="train")
    with pytest.raises(ValueError, match="^theta: expected a flat vector of the system's 24 controls"):
        theory.hessian(flat)
    assert theory.hessian(flat, np.zeros(flat.system.parameter_count)).shape == (24, 24)   # flat API unchanged


# --- (6) the Hessian at initialisation ------------------------------------------------------------------
def _inner_and_last(net, block):
    """Index sets in θ of block ``block``'s branch parameters before its last convolution, and of that conv."""
    offsets, start = {}, 0
    for name, p in net.named_parameters():
        offsets[name] = np.arange(start, start + p.numel())
        start += p.numel()
    prefix = f"blocks.{block}.branch."
    last = f"{prefix}{len(net.blocks[block].branch) - 1}."
    inner = np.concatenate([i for n, i in offsets.items() if n.startswith(prefix) and not n.startswith(last)])
    own = np.concatenate([i for n, i in offsets.items() if n.startswith(last)])
    return inner, own


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_zero_branches_decouple_each_branch_from_all_but_its_last_convolution(mode):
    """At W_2,k = 0 the network does not depend on block k's other branch parameters θ_k and ∂J/∂θ_k is linear
    in W_2,k: H's rows of θ_k vanish except against W_2,k. Checked by products Hv with v random off W_2,k (exactly
    0 on θ_k) and on W_2,k (not 0); not so at Kaiming's initialisation with the same draws."""
    rng = np.random.default_rng(0)
    for zero in (True, False):
        net = preact(zero_branches=zero, seed=5)
        ocp = tp.OCP(net, images(8, 1), labels(), terminal_cost=tp.CrossEntropy(num_classes=C))
        size = sum(p.numel() for p in net.parameters())
        for block in range(net.depth):
            inner, own = _inner_and_last(net, block)
            off, on = rng.normal(size=size), np.zeros(size)
            off[own] = 0.0
            on[own] = rng.normal(size=own.size)
            coupling = np.abs(theory.hessian_vector_product(ocp, vector=off, mode=mode)[inner]).max()
            with_own = np.abs(theory.hessian_vector_product(ocp, vector=on, mode=mode)[inner]).max()
            assert with_own > 1e-3
            assert coupling == 0.0 if zero else coupling > 1e-3


def test_initialisation_spectrum_zero_branches_against_kaiming():
    """Without normalisation (eval mode: statistics (0, 1) at initialisation) the Kaiming network's Hessian
    extremes explode with depth, the zero-initialised one's grow slower than depth. Measured on these 4×4 images
    (8 samples) for 1 → 8 blocks per stage (N = 2 → 16), seeds 0-9: max|λ| grows 1.6-5.8× with zero branches,
    20-185× with Kaiming's; at 8 blocks Kaiming's max|λ| is 6.8-199× the zero one's, each seed's Kaiming growth
    5.9-84× the zero one's. Asserted with margins (3×) on three seeds; λ_min < 0 at zero branches (a saddle)."""
    inputs = images(8, 1, size=4)
    spectrum = theory.initialisation_spectrum(inputs, labels(), mode="eval", depths=(1, 8), seeds=(0, 1, 2),
                                              tolerance=1e-3)
    assert len(spectrum.rows) == 12 and spectrum.mode == "eval"
    for seed in (0, 1, 2):
        row = {(r.initialisation, r.blocks_per_stage): r for r in spectrum.rows if r.seed == seed}
        zero_growth = row["zero", 8].max_magnitude / row["zero", 1].max_magnitude
        kaiming_growth = row["kaiming", 8].max_magnitude / row["kaiming", 1].max_magnitude
        assert row["kaiming", 8].max_magnitude > 3 * row["zero", 8].max_magnitude
        assert kaiming_growth > 3 * zero_growth
        assert all(row["zero", d].smallest < 0 < row["zero", d].largest for d in (1, 8))
        assert row["zero", 8].depth == 16 and row["zero", 8].parameters == row["kaiming", 8].parameters
    table = spectrum.as_dict()
    assert table["mode"] == "eval" and {"smallest", "largest", "max_magnitude", "parameters"} <= set(table["rows"][0])
    assert "kaiming" in spectrum.format() and spectrum.mean("zero", 8) > spectrum.mean("zero", 1)
