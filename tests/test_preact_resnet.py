"""Pre-activation convolutional ResNet of the stage-cost paper (``preact_resnet``, a ResidualNetwork): exits,
Lemma 1, SubResNets, counts."""
import copy

import pytest
import torch

from turnpike import preact_resnet
from turnpike.systems import Subsample
from turnpike.systems._preact import truncated_blocks_per_stage

from test_residual_network import randomise  # every parameter, BatchNorm and exit row perturbed

WIDTHS = {"standard": (4, 8, 16), "homogeneous": (6, 6, 6)}
BLOCKS = (2, 1, 3)            # uneven stages: exit groups of 3, 1 and 3 states
CLASSES = 5
SCHEMES = sorted(WIDTHS)
TRAINED_EXITS = ("ws", "full")


def make(scheme, exits, *, blocks=BLOCKS, seed=0, **options):
    torch.manual_seed(seed)
    return preact_resnet(blocks_per_stage=blocks, widths=WIDTHS[scheme], exits=exits, num_classes=CLASSES,
                         **options).double()


def head_norm(net):
    return next(m for m in net.head.modules() if isinstance(m, torch.nn.BatchNorm2d))


def head_linear(net):
    return next(m for m in net.head.modules() if isinstance(m, torch.nn.Linear))


def tail_skips(net):
    """The stage transitions leading the head (a SubResNet's output map T)."""
    return [m for m in net.head if isinstance(m, (torch.nn.Conv2d, Subsample))]


def exit_rows(net, name):
    """The head statistic ``name`` of exits 0..N as one (N+1, C) tensor: exits 0..N-1's rows, then the head
    BatchNorm's own (exit N, the network's output)."""
    return torch.cat([getattr(net.exit_statistics[-1], name), getattr(head_norm(net), name)[None]])


def stage_of(states, k):
    """The stage of state x_k (9 × 9 images): 0 at the input resolution, one more at every halving."""
    return {9: 0, 5: 1, 3: 2}[states[k].shape[-1]]


def images(batch=6, size=9, seed=1):
    # odd size: 9 -> 5 -> 3 checks that strided subsampling matches the stride-2 convolutions
    return torch.randn(batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def buffers(net):
    return {name: b.clone() for name, b in net.named_buffers()}


# ------------------------------------------------------------------------------------------------ structure
def test_structure_depth_stages_and_groups():
    net = make("standard", "ws")
    assert net.depth == 6 and net.num_exits == 7
    states = net.states(images())
    assert [stage_of(states, k) for k in range(7)] == [0, 0, 0, 1, 2, 2, 2]
    assert net.exit_groups == ((0, 3), (3, 4), (4, 7))
    assert [tuple(x.shape[1:]) for x in states] == [(4, 9, 9)] * 3 + [(8, 5, 5)] + [(16, 3, 3)] * 3
    # learned 1x1 stride-2 convolutions where widths change, subsampling (no parameters) where they do not
    assert isinstance(net.blocks[2].skip, torch.nn.Conv2d) and net.blocks[2].skip.bias is None
    assert sum(p.numel() for b in make("homogeneous", "ws").blocks for p in b.skip.parameters()) == 0


def test_skips_act_on_the_block_input_not_its_preactivation():
    net = randomise(make("standard", "ws")).eval()
    x = images()
    with torch.no_grad():
        x2 = net.states(x)[2]
        block = net.blocks[2]
        expected = torch.nn.functional.conv2d(x2, block.skip.weight, stride=2) + block.branch(x2)
        torch.testing.assert_close(block(x2), expected)


# ------------------------------------------------------------------------------------------------ batched exits
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("exits", TRAINED_EXITS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_batched_exits_equal_one_by_one_reference(scheme, exits, training):
    batched_net = randomise(make(scheme, exits)).train(training)
    reference_net = copy.deepcopy(batched_net)
    x = images()
    with torch.no_grad():
        batched = batched_net.exit_logits(x)
        states = reference_net.states(x)
        reference = torch.stack([reference_net.exit_logit(k, states[k]) for k in range(reference_net.depth + 1)])
    assert batched.shape == (7, 6, CLASSES)
    torch.testing.assert_close(batched, reference, rtol=1e-10, atol=1e-10)
    # the per-exit statistics must matter, else this test could not see a wrong row being used
    assert (batched[1:] - batched[:-1]).abs().max() > 1e-3
    # training mode: both paths update the same rows by the same amounts (and nothing else differs)
    for name, value in buffers(batched_net).items():
        torch.testing.assert_close(value, dict(reference_net.named_buffers())[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("exits", TRAINED_EXITS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_composed_skips_equal_the_chain(scheme, exits):
    net = randomise(make(scheme, exits))
    states = net.states(images())
    learned = [q for q in net.projections if isinstance(net.blocks[q].skip, torch.nn.Conv2d)]
    with torch.no_grad():
        for k, x in enumerate(states):
            stride = 2 ** (2 - stage_of(states, k))
            matrix = None
            for j in (q for q in learned if q >= k):     # exit k's weights of the remaining learned skips
                weight = net.blocks[j].skip.weight.flatten(1)
                if exits == "full" and k < net.depth:
                    weight = net.exit_copies[learned.index(j)][k].view_as(weight)
                matrix = weight if matrix is None else weight @ matrix
            composed = x[:, :, ::stride, ::stride]
            if matrix is not None:
                composed = torch.einsum("oc,bchw->bohw", matrix, composed)
            chain = net.exit_features(k, x)
            assert chain.shape == (6, 16 if scheme == "standard" else 6, 3, 3)
            torch.testing.assert_close(composed, chain, rtol=1e-12, atol=1e-12)
            assert (matrix is None) == (scheme == "homogeneous" or stage_of(states, k) == 2)
            if exits == "ws":   # the chain of the backbone's own skip modules
                modules = x
                for j in range(k, net.depth):
                    modules = net.blocks[j].skip(modules)
                torch.testing.assert_close(chain, modules, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ Lemma 1
@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("exits", TRAINED_EXITS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_lemma1_zero_branches_after_M_make_later_exits_equal_exit_M(scheme, exits, M):
    net = randomise(make(scheme, exits))
    net.copy_backbone_to_exits()   # Lemma 1 is about exits built from the backbone's skips and head
    with torch.no_grad():
        for block in net.blocks[M:]:
            for p in block.branch.parameters():
                p.zero_()
    x = images()
    net.train()
    with torch.no_grad():
        logits = net.exit_logits(x)
    for k in range(M, net.depth + 1):
        torch.testing.assert_close(logits[k], logits[M], rtol=1e-9, atol=1e-9)
    assert (logits[M - 1] - logits[M]).abs().max() > 1e-3   # the residual blocks before M do act
    net.recalibrate_exit_statistics([images(seed=s) for s in (3, 4)])
    net.eval()
    with torch.no_grad():
        logits = net.exit_logits(x)
    for k in range(M, net.depth + 1):
        torch.testing.assert_close(logits[k], logits[M], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(exit_rows(net, "running_var")[k], exit_rows(net, "running_var")[M], rtol=1e-9,
                                   atol=1e-9)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_zero_branches_option_makes_the_untrained_net_carried_by_its_skips(scheme):
    net = make(scheme, "full", zero_branches=True).train()
    states = net.states(images())
    assert all(block.branch[-1].weight.abs().sum() == 0 for block in net.blocks)
    with torch.no_grad():
        torch.testing.assert_close(states[2], states[1])   # identity skip, zero branch
        logits = net.exit_logits(images())
    for k in range(net.depth + 1):
        torch.testing.assert_close(logits[k], logits[0], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------ SubResNet
@pytest.mark.parametrize("exits", ["standard", "ws", "full"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_subresnet_output_equals_exit_M(scheme, exits):
    net = randomise(make(scheme, exits)).eval()
    x = images()
    with torch.no_grad():
        logits = net.exit_logits(x)
    truncations = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (2, 1, 0), (2, 1, 1), (2, 1, 2), (2, 1, 3)]
    for M in range(net.depth + 1):
        sub = net.subresnet(M)
        # a stage without blocks leaves its transition to the head
        assert sub.depth == M and len(tail_skips(sub)) == truncations[M][1:].count(0) and not sub.training
        with torch.no_grad():
            torch.testing.assert_close(sub(x), logits[M], rtol=1e-10, atol=1e-10)
        fresh = preact_resnet(blocks_per_stage=truncations[M], widths=WIDTHS[scheme], num_classes=CLASSES)
        assert sub.parameter_count() == fresh.parameter_count()
        assert list(sub.exit_parameters()) == []   # full's other exits are dropped
        assert sub.exits == ("standard" if exits == "standard" else "ws")
        # the SubResNet's own earlier exits are this network's (exactly so for shared exits)
        if exits != "full" and M > 0:
            with torch.no_grad():
                torch.testing.assert_close(sub.exit_logits(x), logits[:M + 1], rtol=1e-10, atol=1e-10)
    # pruned SubResNets of ws and full networks have the same size (Table 1)
    assert net.subresnet(3).parameter_count() == make(scheme, "ws").subresnet(3).parameter_count()


def test_subresnet_keeps_exit_M_own_parameters_and_statistics_for_full_exits():
    net = randomise(make("standard", "full")).eval()
    sub = net.subresnet(1)
    # exit copies: the skips 4->8 and 8->16, then the head's BatchNorm weight and bias, Linear weight and bias
    torch.testing.assert_close(head_linear(sub).weight, net.exit_copies[-2][1].view(CLASSES, 16))
    torch.testing.assert_close(head_norm(sub).bias, net.exit_copies[-3][1])
    torch.testing.assert_close(tail_skips(sub)[1].weight[:, :, 0, 0], net.exit_copies[1][1].view(16, 8))
    torch.testing.assert_close(exit_rows(sub, "running_mean")[1], exit_rows(net, "running_mean")[1])
    assert isinstance(tail_skips(sub)[0], torch.nn.Conv2d) and len(tail_skips(sub)) == 2


# ------------------------------------------------------------------------------------------------ forward, groups
@pytest.mark.parametrize("exits", ["standard", "full"])
def test_forward_equals_last_exit_in_both_modes(exits):
    for training in (True, False):
        net = randomise(make("standard", exits)).train(training)
        twin = copy.deepcopy(net)
        x = images()
        with torch.no_grad():
            torch.testing.assert_close(net(x), twin.exit_logits(x)[-1], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(net(x, all_exits=True), twin.exit_logits(x), rtol=1e-10, atol=1e-10)
        logits, states = net.forward_all(x, return_states=True)
        assert logits.shape == (7, 6, CLASSES) and len(states) == 7
        assert net.forward_all(x)[1] is None


@pytest.mark.parametrize("exits", ["standard", "ws", "full"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_parameter_groups_partition_the_parameters(scheme, exits):
    net = make(scheme, exits)
    groups = [list(net.branch_parameters()), list(net.exit_parameters()), list(net.backbone_parameters())]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}
    c = WIDTHS[scheme]
    branch_counts = [2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout
                     for cin, cout in [(c[0], c[0])] * 2 + [(c[0], c[1])] + [(c[1], c[2])] + [(c[2], c[2])] * 2]
    assert sum(p.numel() for p in groups[0]) == sum(branch_counts)
    expected_exit = 0
    if exits == "full":   # own head for exits 0..5, own skips: 3 exits pass 4->8, 4 exits pass 8->16
        expected_exit = 6 * (2 * c[2] + CLASSES * c[2] + CLASSES)
        if scheme == "standard":
            expected_exit += 3 * 8 * 4 + 4 * 16 * 8
    assert sum(p.numel() for p in groups[1]) == expected_exit


def test_branch_parameter_norms():
    net = randomise(make("standard", "ws"))
    with torch.no_grad():
        for p in net.blocks[4].branch.parameters():
            p.zero_()
    norms = net.branch_parameter_norms()
    expected = [torch.cat([p.flatten() for p in b.branch.parameters()]).norm() for b in net.blocks]
    torch.testing.assert_close(norms, torch.stack(expected))
    assert norms.shape == (6,) and norms[4] == 0 and norms[3] > 0


# ------------------------------------------------------------------------------------------------ Table 1 counts
SUB12 = truncated_blocks_per_stage((18, 18, 18), 12)   # SubResNet-12 of ResNet-54: (12, 0, 0)
TABLE1 = [   # (constructor, exact count, paper's rounded value in millions, rounding digits)
    (lambda: preact_resnet(exits="standard"), 1_730_554, 1.7, 1),
    (lambda: preact_resnet(exits="ws"), 1_730_554, 1.7, 1),
    (lambda: preact_resnet(exits="full"), 1_858_070, 1.9, 1),
    (lambda: preact_resnet(widths=(64,) * 3, exits="ws"), 3_997_770, 4.0, 1),
    (lambda: preact_resnet(widths=(64,) * 3, exits="full"), 4_039_782, 4.0, 1),
    (lambda: preact_resnet(widths=(64,) * 3, num_classes=100, exits="ws"), 4_003_620, 4.0, 1),
    (lambda: preact_resnet(widths=(64,) * 3, num_classes=100, exits="full"), 4_361_532, 4.4, 1),
    (lambda: preact_resnet(widths=(32,) * 3, in_channels=1, exits="ws"), 1_002_986, 1.0, 1),
    (lambda: preact_resnet(widths=(32,) * 3, in_channels=1, exits="full"), 1_024_262, 1.0, 1),
    (lambda: preact_resnet(blocks_per_stage=SUB12), 59_866, 0.06, 2),
    (lambda: preact_resnet(blocks_per_stage=SUB12, widths=(64,) * 3), 890_442, 0.9, 1),
    (lambda: preact_resnet(blocks_per_stage=SUB12, widths=(64,) * 3, num_classes=100), 896_292, 0.9, 1),
    (lambda: preact_resnet(blocks_per_stage=SUB12, widths=(32,) * 3, in_channels=1), 223_466, 0.2, 1),
]


@pytest.mark.parametrize("build, exact, paper, digits", TABLE1)
def test_table1_parameter_counts(build, exact, paper, digits):
    net = build()
    assert net.parameter_count() == exact
    assert round(exact / 1e6, digits) == paper
    assert net.depth in (54, 12)


def test_pruned_full_resnet54_is_the_size_of_subresnet12():
    net = preact_resnet(exits="full")
    assert SUB12 == (12, 0, 0)
    assert net.depth == 54 and net.subresnet(12).depth == 12 and len(tail_skips(net.subresnet(12))) == 2
    assert net.subresnet(12).parameter_count() == 59_866


# ------------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("exits", TRAINED_EXITS)
def test_recalibration_gives_the_exact_per_exit_statistics(exits):
    net = randomise(make("standard", exits)).train()
    before = copy.deepcopy(net)
    batches = [(images(batch=b, seed=10 + b), torch.zeros(b)) for b in (5, 7, 4)]
    assert net.recalibrate_exit_statistics(iter(batches)) == 3
    assert net.training
    for (name, new), old in zip(net.named_parameters(), before.parameters()):
        assert torch.equal(new, old), name
    head = {f"head.{name}.{b}" for name, m in net.head.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
            for b in ("running_mean", "running_var", "num_batches_tracked")}
    for name, value in net.named_buffers():
        if not name.startswith("exit_") and name not in head:                   # exit N's are the head's
            assert torch.equal(value, dict(before.named_buffers())[name]), name   # backbone untouched
    before.eval()
    with torch.no_grad():
        for k in range(net.depth + 1):
            means, variances = [], []
            for x, _ in batches:
                features = before.exit_features(k, before.states(x)[k])
                means.append(features.mean(dim=(0, 2, 3)))
                variances.append(features.var(dim=(0, 2, 3), unbiased=True))
            torch.testing.assert_close(exit_rows(net, "running_mean")[k], torch.stack(means).mean(0), rtol=1e-12,
                                       atol=1e-12)
            torch.testing.assert_close(exit_rows(net, "running_var")[k], torch.stack(variances).mean(0), rtol=1e-12,
                                       atol=1e-12)
    assert exit_rows(net, "num_batches_tracked").tolist() == [3] * 7


def test_recalibration_refuses_an_empty_iterable_and_keeps_the_statistics():
    net = randomise(make("standard", "ws"))
    old = buffers(net)
    with pytest.raises(ValueError, match="batches"):
        net.recalibrate_exit_statistics([])
    for name, value in buffers(net).items():
        assert torch.equal(value, old[name])


def test_training_forward_updates_only_bn_buffers_with_momentum():
    net = randomise(make("standard", "full")).train()
    reference = copy.deepcopy(net)
    old = buffers(net)
    old_rows = exit_rows(net, "running_mean")
    old_parameters = [p.clone() for p in net.parameters()]
    x = images()
    with torch.no_grad():
        net.exit_logits(x)
        states = reference.states(x)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), old_parameters))
    changed = {name for name, value in buffers(net).items() if not torch.equal(value, old[name])}
    assert changed and all(name.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")
                           for name in changed)
    for k in range(net.depth + 1):
        features = reference.exit_features(k, states[k])
        expected = 0.9 * old_rows[k] + 0.1 * features.mean(dim=(0, 2, 3))
        torch.testing.assert_close(exit_rows(net, "running_mean")[k], expected, rtol=1e-12, atol=1e-12)
    # forward computes (and so updates) exit N only
    before_forward = exit_rows(net, "running_mean")
    with torch.no_grad():
        net(x)
    assert torch.equal(exit_rows(net, "running_mean")[:-1], before_forward[:-1])
    assert not torch.equal(exit_rows(net, "running_mean")[-1], before_forward[-1])
    assert exit_rows(net, "num_batches_tracked").tolist() == [1] * 6 + [2]


def test_cumulative_momentum_averages_per_exit():
    net = randomise(make("homogeneous", "ws"), seed=5).train()
    net.exit_momentum = None
    head_norm(net).momentum = None              # exit N's statistics are the head BatchNorm's own
    for statistics in (net.exit_statistics[-1], head_norm(net)):
        statistics.running_mean.zero_()
        statistics.num_batches_tracked.zero_()
    means = []
    for seed in (7, 8):
        x = images(seed=seed)
        twin = copy.deepcopy(net)
        with torch.no_grad():
            net.exit_logits(x)
            states = twin.states(x)
            means.append(torch.stack([twin.exit_features(k, states[k]).mean(dim=(0, 2, 3))
                                      for k in range(net.depth + 1)]))
    torch.testing.assert_close(exit_rows(net, "running_mean"), (means[0] + means[1]) / 2, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ precision, layout
@pytest.mark.parametrize("exits", TRAINED_EXITS)
def test_bf16_autocast_and_channels_last(exits):
    torch.manual_seed(0)
    net = preact_resnet(blocks_per_stage=BLOCKS, widths=WIDTHS["standard"], exits=exits, num_classes=CLASSES)
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        plain = copy.deepcopy(net).eval().exit_logits(x.contiguous())
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.exit_logits(x), plain, rtol=1e-4, atol=1e-4)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net.exit_logits(x)
        output = net(x)
    assert logits.shape == (7, 4, CLASSES) and output.shape == (4, CLASSES)
    assert torch.isfinite(logits.float()).all() and torch.isfinite(output.float()).all()
    logits.float().logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("exits", TRAINED_EXITS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_channels_last_exits_and_gradients_equal_the_contiguous_ones(scheme, exits):
    """Channels-last states take their own exit path (features stored exit-minor, subsampling by
    one-pixel pooling): the same logits, running statistics and gradients, odd sizes included."""
    contiguous = randomise(make(scheme, exits)).train()
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    x = images(size=9)
    losses = []
    for net, batch in ((contiguous, x), (channels_last, x.contiguous(memory_format=torch.channels_last))):
        logits = net.exit_logits(batch)
        losses.append(logits)
        (logits.logsumexp(-1) * torch.linspace(0.5, 1.5, logits.shape[0], dtype=logits.dtype)[:, None]).sum().backward()
    states = copy.deepcopy(channels_last).states(x.contiguous(memory_format=torch.channels_last))
    assert states[1].is_contiguous(memory_format=torch.channels_last) and not states[1].is_contiguous()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=1e-10)
    for (name, a), b in zip(contiguous.named_parameters(), channels_last.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-10, msg=name)
    for name, value in buffers(contiguous).items():
        torch.testing.assert_close(dict(channels_last.named_buffers())[name], value, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("options, name", [
    (dict(blocks_per_stage=-1), "blocks_per_stage"),
    (dict(blocks_per_stage=(2, 2)), "blocks_per_stage"),
    (dict(blocks_per_stage=(2, 0, 2)), "blocks_per_stage"),
    (dict(blocks_per_stage=(2, 2.5, 2)), r"blocks_per_stage\[1\]"),
    (dict(blocks_per_stage="18"), "blocks_per_stage"),
    (dict(widths=()), "widths"),
    (dict(widths=(16, 0, 64)), r"widths\[1\]"),
    (dict(widths=16), "widths"),
    (dict(in_channels=0), "in_channels"),
    (dict(num_classes=0), "num_classes"),
    (dict(exits="shared"), "exits"),
    (dict(zero_branches=1), "zero_branches"),
    (dict(exit_momentum=0.0), "exit_momentum"),
    (dict(exit_momentum=1.5), "exit_momentum"),
])
def test_bad_constructor_arguments_name_the_argument(options, name):
    arguments = dict(blocks_per_stage=1, widths=(4, 8, 16))
    arguments.update(options)
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        preact_resnet(**arguments)


def test_bad_method_arguments_name_the_argument():
    net = make("standard", "ws")
    x = images()
    with pytest.raises(ValueError, match="^k: expected"):
        net.exit_logit(7, net.states(x)[0])
    with pytest.raises(ValueError, match="^x_k: expected"):
        net.exit_logit(4, net.states(x)[0])
    with pytest.raises(ValueError, match="^depth: expected"):
        net.subresnet(7)
    with pytest.raises(ValueError, match="^exits: expected"):
        net.subresnet(2, exits="none")
    with pytest.raises(ValueError, match=r"^widths\[0\]: expected"):
        preact_resnet(widths=(0, 0, 0))
