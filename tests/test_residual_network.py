"""Skip-path exits of any residual network (issue 22): the torchvision-layout adapter, the generic form, Lemma 1,
batched exits, per-exit statistics, pruning, training through solve_ocp, checkpoints and early exit.

torchvision is never imported: its ResNet layout (names, structure, forward and initialisation of
torchvision/models/resnet.py) is ``turnpike.models``' (its parameter counts are checked against torchvision's
published ones below), widths scaled by ``base`` for tiny networks.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import turnpike as tp


from turnpike.models import BasicBlock, Bottleneck, ResNet, resnet18, resnet50

CLASSES = 5


def tiny(kind="basic", seed=0, **kw):
    """Tiny torchvision-layout networks (float64): ResNet-18 layout, a Bottleneck net, wide and grouped ones."""
    torch.manual_seed(seed)
    builders = {
        "basic": lambda: ResNet(BasicBlock, [2, 2, 2, 2], num_classes=CLASSES, base=4, **kw),
        "bottleneck": lambda: ResNet(Bottleneck, [2, 1, 2, 1], num_classes=CLASSES, base=4, **kw),
        "wide": lambda: ResNet(Bottleneck, [1, 1, 1, 1], num_classes=CLASSES, base=4, width_per_group=128, **kw),
        "grouped": lambda: ResNet(Bottleneck, [1, 2, 1, 1], num_classes=CLASSES, base=4, groups=2,
                                  width_per_group=32, **kw),
    }
    return builders[kind]().double()


def inputs(batch=6, size=16, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, dtype=torch.float64, generator=g)


@torch.no_grad()
def randomise(net, seed=2):
    """Perturb every parameter (full exits then differ from the backbone) and give every BatchNorm, exit rows
    included, distinct random running statistics."""
    g = torch.Generator().manual_seed(seed)

    def noise(t):
        return torch.randn(t.shape, generator=g, dtype=t.dtype)

    for p in net.parameters():
        p.add_(0.3 * noise(p))
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(0.3 * noise(m.running_mean))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5)
    for table in net.exit_statistics:
        table.running_mean.copy_(0.3 * noise(table.running_mean))
        table.running_var.copy_(torch.rand(table.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    return net


def zero_branches(net, start):
    with torch.no_grad():
        for block in net.blocks[start:]:
            for p in block.branch.parameters():
                p.zero_()


def buffers(net):
    return {name: b.clone() for name, b in net.named_buffers()}


# ------------------------------------------------------------------------------------------------ generic form
class Subsample(nn.Module):
    def forward(self, x):
        return x[:, :, ::2, ::2]


def preact_branch(cin, cout, stride):
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))


def generic(exits="ws", activation=None, seed=0, **options):
    """A model that is not torchvision's: pre-activation branches, a projection skip with a BatchNorm (nested in
    a Sequential), a parameter-free subsampling skip, optional post-activations (Tanh: not idempotent), and a head
    BatchNorm → ReLU → pool → Linear whose statistics are per exit too."""
    torch.manual_seed(seed)
    act = (lambda: None) if activation is None else activation
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    blocks = [tp.ResidualBlock(preact_branch(4, 4, 1), None, act()),
              (preact_branch(4, 4, 1), None, act()),
              tp.ResidualBlock(preact_branch(4, 6, 2),
                               nn.Sequential(nn.Conv2d(4, 6, 1, 2, bias=False), nn.Sequential(nn.BatchNorm2d(6))),
                               act()),
              dict(branch=preact_branch(6, 6, 1), activation=act()),
              tp.ResidualBlock(preact_branch(6, 6, 2), Subsample(), act()),
              tp.ResidualBlock(preact_branch(6, 6, 1), None, act())]
    head = nn.Sequential(nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, CLASSES))
    return tp.residual_network(stem=stem, blocks=blocks, head=head, exits=exits, **options).double()


def projections_first(exits="ws", seed=0):
    """Projection skips at block 0 and at two consecutive blocks, post-addition ReLUs: groups of exits that enter a
    projection with no state of their own (the batched exits' edge cases)."""
    torch.manual_seed(seed)

    def projection(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    blocks = [tp.ResidualBlock(preact_branch(4, 6, 2), projection(4, 6), nn.ReLU()),
              tp.ResidualBlock(preact_branch(6, 8, 2), projection(6, 8), nn.ReLU()),
              tp.ResidualBlock(preact_branch(8, 8, 1), None, nn.ReLU()),
              tp.ResidualBlock(preact_branch(8, 8, 2), projection(8, 8), nn.ReLU()),
              tp.ResidualBlock(preact_branch(8, 8, 1), None, nn.ReLU()),
              tp.ResidualBlock(preact_branch(8, 8, 1), None, nn.ReLU())]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES))
    return tp.residual_network(stem=stem, blocks=blocks, head=head, exits=exits).double()


NETWORKS = {
    "basic": lambda exits: tp.residual_network(tiny("basic"), exits=exits),
    "bottleneck": lambda exits: tp.residual_network(tiny("bottleneck"), exits=exits),
    "generic": lambda exits: generic(exits),
    "generic-tanh": lambda exits: generic(exits, activation=nn.Tanh),
    "projections-first": projections_first,
}
KINDS = ("basic", "bottleneck", "wide", "grouped")


# ------------------------------------------------------------------------------------------------ the adapter
@pytest.mark.parametrize("kind", KINDS)
def test_adapter_recognises_torchvision_layouts_and_wraps_the_model(kind):
    model = tiny(kind)
    net = tp.residual_network(model)
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert net.depth == sum(len(layer) for layer in layers) and net.num_classes == CLASSES
    assert net.input_shape == (3, None, None)
    starts = np.cumsum([0] + [len(layer) for layer in layers])[:-1]
    expected = [q for q, s in enumerate(starts) if layers[q][0].downsample is not None]
    assert net.projections == tuple(int(starts[q]) for q in expected)
    # the same parameter and buffer tensors: wrapped, not copied
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    assert {id(b) for b in net.buffers()} >= {id(b) for b in model.buffers()}
    assert net.parameter_count() == sum(p.numel() for p in model.parameters())
    x = inputs()
    for training in (False, True):
        twin = copy.deepcopy(model).train(training)
        net.train(training)
        with torch.no_grad():
            torch.testing.assert_close(net(x), twin(x), rtol=0, atol=0)
        for (name, mine), theirs in zip(model.named_buffers(), twin.buffers()):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("build, count", [(resnet18, 11_689_512), (resnet50, 25_557_032),
                                          (lambda: ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=128), 68_883_240),
                                          (lambda: ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4),
                                           25_028_904)], ids=["resnet18", "resnet50", "wide_resnet50_2",
                                                              "resnext50_32x4d"])
def test_parameter_counts_equal_torchvisions_published_ones(build, count):
    with torch.device("meta"):        # built at full size, 1,000 classes, never run
        model = build()
        net = tp.residual_network(model)
    assert net.parameter_count() == count == sum(p.numel() for p in model.parameters())
    assert net.depth == (8 if build is resnet18 else 16)
    assert net.projections == ((2, 4, 6) if build is resnet18 else (0, 3, 7, 13))


class WithDropout(ResNet):
    def __init__(self):
        super().__init__(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES, base=4)
        self.dropout = nn.Dropout()


class Scaled(BasicBlock):           # the same modules, another forward
    def forward(self, x):
        return 0.5 * super().forward(x)


def _broken(change):
    model = tiny("basic")
    change(model)
    return model


@pytest.mark.parametrize("model, where", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)), "model: expected torchvision's ResNet layout"),
    (_broken(lambda m: delattr(m, "fc")), "has no fc"),
    (_broken(lambda m: delattr(m.layer2[1], "bn2")), r"model.layer2\[1\]: expected a BasicBlock .* without bn2"),
    (_broken(lambda m: setattr(m.layer3[0], "se", nn.Linear(2, 2))), r"model.layer3\[0\]: .* also has se"),
    (_broken(lambda m: setattr(m.layer1[0], "conv2", nn.Linear(2, 2))),
     r"model.layer1\[0\].conv2: expected an nn.Conv2d"),
    (WithDropout(), "also has dropout"),
    (_broken(lambda m: setattr(m, "layer2", nn.ModuleList(m.layer2))), "model.layer2: expected an nn.Sequential"),
])
def test_unrecognised_structures_name_the_part_and_the_generic_form(model, where):
    with pytest.raises(ValueError, match=where) as error:
        tp.residual_network(model)
    assert "turnpike.residual_network(stem=..., blocks=[turnpike.ResidualBlock(" in str(error.value)


def test_a_block_with_another_forward_is_refused_by_the_numerical_check():
    model = tiny("basic")
    block = model.layer2[1]
    scaled = Scaled(8, 8)
    scaled.load_state_dict(block.state_dict())
    model.layer2[1] = scaled.double()
    with pytest.raises(ValueError, match=r"model.layer2\[1\]: expected a block computing relu\(branch"):
        tp.residual_network(model)
    assert tp.residual_network(model, verify=False).depth == 8     # structure alone: the user's call


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(stem=nn.Identity(), blocks=[(nn.Identity(),)], head=None), "head"),
    (dict(stem=nn.Identity(), blocks=[3], head=nn.Linear(2, 3)), r"blocks\[0\]"),
    (dict(stem=nn.Identity(), blocks=[dict(skip=nn.Identity())], head=nn.Linear(2, 3)), r"blocks\[0\]"),
    (dict(stem=nn.Identity(), blocks=[], head=nn.Flatten(), input_shape=(2,)), "num_classes"),
    (dict(stem=nn.Identity(), blocks=[], head=nn.Linear(2, 3)), "input_shape"),
    (dict(stem=nn.Conv2d(3, 4, 1), blocks=[(nn.Identity(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.Module()))],
          head=nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), exits="bad"), "exits"),
])
def test_generic_form_arguments_are_checked(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tp.residual_network(**kwargs)


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 1, 2, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_exit_path_normalisations_must_be_sequential_entries_and_full_copies_known_layers():
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"blocks.0.skip: a Wrapped holding a BatchNorm on an exit path"):
        tp.residual_network(stem=nn.Conv2d(3, 4, 1), blocks=[(preact_branch(4, 4, 2), Wrapped())], head=head)
    prelu_head = nn.Sequential(nn.PReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"head.0: exits='full' .* PReLU has parameters; use exits='ws'"):
        tp.residual_network(stem=nn.Conv2d(3, 4, 1), blocks=[], head=prelu_head, exits="full")
    assert tp.residual_network(stem=nn.Conv2d(3, 4, 1), blocks=[], head=prelu_head).depth == 0


# ------------------------------------------------------------------------------------------------ exits
@torch.no_grad()
def test_exit_k_of_torchvision_blocks_is_relu_downsample_chain_then_the_head():
    """Eq. (2) generalised, written out with the model's own modules: exit k = fc(flatten(avgpool(relu(ds(⋯
    relu(x_k)))))), each downsample BatchNorm with exit k's row (the block's own statistics for exit q at q)."""
    model = tiny("basic")
    net = randomise(tp.residual_network(model)).eval()
    x = inputs()
    logits, states = net.forward_all(x, return_states=True)
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    tables = {q: net.exit_statistics[i] for i, q in enumerate(net.projections)}
    for k in range(net.depth + 1):
        h = states[k]
        for j in range(k, net.depth):
            if blocks[j].downsample is not None:
                conv, bn = blocks[j].downsample
                mean, var = ((tables[j].running_mean[k], tables[j].running_var[k]) if k < j
                             else (bn.running_mean, bn.running_var))
                h = F.batch_norm(conv(h), mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
            h = F.relu(h)
        expected = model.fc(torch.flatten(model.avgpool(h), 1))
        torch.testing.assert_close(logits[k], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blocks", [(2, 1, 3), (2, 0, 0)], ids=["network", "trailing-skips"])
@pytest.mark.parametrize("widths", [(4, 8, 16), (6, 6, 6)], ids=["standard", "homogeneous"])
@pytest.mark.parametrize("exits", ["ws", "full"])
def test_composed_preact_exits_equal_the_skip_by_skip_eq2_exits_and_statistics(exits, widths, blocks):
    """preact_resnet's exits, its 1×1 and subsampling skips composed into one map per stage, equal the same
    network's exits computed skip by skip (eq. 2), and update the same statistics."""
    torch.manual_seed(0)
    composed = randomise(tp.preact_resnet(blocks_per_stage=blocks, widths=widths, num_classes=CLASSES,
                                          exits=exits).double())
    assert composed._chains is not None
    chained = copy.deepcopy(composed)
    chained.batched_exits = False
    x = torch.randn(6, 3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for training in (False, True):
        composed.train(training)
        chained.train(training)
        logits = composed.exit_logits(x)
        expected = chained.exit_logits(x)
        torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(logits[-1], chained(x), rtol=1e-12, atol=1e-12)
        composed(x)                          # the same statistics updates as chained's forward pass
        for mine, theirs in zip(composed.buffers(), chained.buffers()):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    grads = [torch.autograd.grad(net.exit_logits(x).square().sum(), list(net.parameters()))
             for net in (composed, chained)]
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batched_exits", [True, None], ids=["batched", "auto"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("exits", ["ws", "full"])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_batched_exits_equal_exits_one_by_one_statistics_included(network, exits, training, batched_exits):
    """exit_logits batched per stage (the GPU default), and as chosen on a CPU (exit by exit), against exit_logit."""
    batched = randomise(NETWORKS[network](exits)).train(training)
    reference = copy.deepcopy(batched)
    batched.batched_exits = batched_exits
    x = inputs()
    with torch.no_grad():
        logits = batched.exit_logits(x)
        states = reference.states(x)
        one_by_one = torch.stack([reference.exit_logit(k, states[k]) for k in range(reference.depth + 1)])
    assert logits.shape == (batched.depth + 1, 6, CLASSES)
    torch.testing.assert_close(logits, one_by_one, rtol=1e-12, atol=1e-12)
    assert (logits[1:] - logits[:-1]).abs().max() > 1e-3     # the rows differ, so a wrong row would show
    for name, value in batched.named_buffers():              # training: the same rows moved by the same amounts
        torch.testing.assert_close(value, dict(reference.named_buffers())[name], rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_forward_equals_the_last_exit_buffers_included(network):
    for training in (True, False):
        net = randomise(NETWORKS[network]("full")).train(training)
        twin = copy.deepcopy(net)
        x = inputs()
        with torch.no_grad():
            torch.testing.assert_close(net(x), twin(x, all_exits=True)[-1], rtol=1e-12, atol=1e-12)
        for name, value in net.named_buffers():
            if not name.startswith("exit_statistics"):
                torch.testing.assert_close(value, dict(twin.named_buffers())[name], rtol=1e-12, atol=1e-14, msg=name)


# ------------------------------------------------------------------------------------------------ Lemma 1
@pytest.mark.parametrize("M", [1, 3, 5])
@pytest.mark.parametrize("exits", ["ws", "full"])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_lemma1_zero_branches_after_M_make_later_exits_equal_exit_M(network, exits, M):
    net = randomise(NETWORKS[network](exits))
    net.copy_backbone_to_exits()   # Lemma 1 is about exits built from the backbone's skips and head
    zero_branches(net, M)
    x = inputs()
    with torch.no_grad():
        logits = net.train()(x, all_exits=True)                      # batch statistics: every batch
    for k in range(M, net.depth + 1):
        torch.testing.assert_close(logits[k], logits[M], rtol=1e-12, atol=1e-12)
    assert (logits[M - 1] - logits[M]).abs().max() > 1e-3            # the blocks before M do act
    net.recalibrate_exit_statistics([inputs(seed=s) for s in (3, 4)])
    with torch.no_grad():
        logits = net.eval()(x, all_exits=True)                       # running statistics, recalibrated
    for k in range(M, net.depth + 1):
        torch.testing.assert_close(logits[k], logits[M], rtol=1e-12, atol=1e-12)
    for (op, norm) in net._exit_path_norms():                        # rows of exits M.. and the backbone's agree
        table = net.exit_statistics[op.stats]
        for k in range(M, table.running_var.shape[0]):
            torch.testing.assert_close(table.running_var[k], norm.running_var, rtol=1e-12, atol=1e-12)


def test_recalibration_gives_the_exact_average_of_the_batch_statistics():
    net = randomise(generic("ws")).train()
    before = copy.deepcopy(net)
    batches = [(inputs(batch=b, seed=10 + b), torch.zeros(b)) for b in (5, 7, 4)]
    assert net.recalibrate_exit_statistics(iter(batches)) == 3
    assert net.training and net.blocks[2].skip[1][0].momentum == 0.1      # flags and momenta restored
    for (name, new), old in zip(net.named_parameters(), before.parameters()):
        assert torch.equal(new, old), name
    path_norms = {op.path for op, _ in net._exit_path_norms()}
    for name, value in net.named_buffers():
        if not name.startswith("exit_statistics") and name.rsplit(".", 1)[0] not in path_norms:
            assert torch.equal(value, dict(before.named_buffers())[name]), name   # stem and branches untouched
    # exits 3..6 pass no skip normalisation: their head rows are averages of their features' batch statistics,
    # the states computed with the projection's normalisation on batch statistics (as every exit path's)
    head_table, head_norm = net.exit_statistics[-1], net.head[0]
    reference = before.eval()
    reference.blocks[2].skip[1][0].train()
    means, variances = [], []
    with torch.no_grad():
        for x, _ in batches:
            states = reference.states(x)
            features = torch.stack([reference.exit_features(k, states[k]) for k in range(3, 7)])   # (4, B, C, H, W)
            means.append(features.mean(dim=(1, 3, 4)))
            variances.append(features.var(dim=(1, 3, 4), unbiased=True))
    rows = torch.cat([head_table.running_mean[3:], head_norm.running_mean[None]])
    torch.testing.assert_close(rows, torch.stack(means).mean(0), rtol=1e-12, atol=1e-12)
    rows = torch.cat([head_table.running_var[3:], head_norm.running_var[None]])
    torch.testing.assert_close(rows, torch.stack(variances).mean(0), rtol=1e-12, atol=1e-12)
    assert head_table.num_batches_tracked.tolist() == [3] * 6 and int(head_norm.num_batches_tracked) == 3
    old = buffers(net)
    with pytest.raises(ValueError, match="batches"):
        net.recalibrate_exit_statistics([])
    for name, value in net.named_buffers():
        assert torch.equal(value, old[name]), name


# ------------------------------------------------------------------------------------------------ pruning, groups
@pytest.mark.parametrize("exits", ["standard", "ws", "full"])
@pytest.mark.parametrize("network", ["basic", "bottleneck", "generic-tanh"])
def test_pruned_network_output_equals_exit_M(network, exits):
    net = randomise(NETWORKS[network](exits)).eval()
    x = inputs()
    with torch.no_grad():
        logits = net.exit_logits(x)
    for M in range(net.depth + 1):
        sub = net.subresnet(M)
        assert sub.depth == M and not sub.training and list(sub.exit_parameters()) == []
        assert sub.exits == ("standard" if exits == "standard" else "ws")
        plain = sub.as_module()
        assert type(plain) is nn.Sequential
        with torch.no_grad():
            torch.testing.assert_close(sub(x), logits[M], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(plain(x), logits[M], rtol=1e-12, atol=1e-12)
            if exits != "full":       # its own exits are this network's
                torch.testing.assert_close(sub.exit_logits(x), logits[:M + 1], rtol=1e-12, atol=1e-12)
        assert {id(p) for p in sub.parameters()}.isdisjoint({id(p) for p in net.parameters()})   # copies
    model = tiny("basic")          # ResNet-18 layout pruned at 3: stem, 3 blocks, the three downsamples, fc
    pruned = tp.residual_network(model).subresnet(3)
    kept = [model.conv1, model.bn1, *model.layer1, model.layer2[0], model.layer2[0].downsample,
            model.layer3[0].downsample, model.layer4[0].downsample, model.fc]
    assert pruned.parameter_count() == sum(p.numel() for p in {id(p): p for m in kept
                                                               for p in m.parameters()}.values())


@pytest.mark.parametrize("exits", ["standard", "ws", "full"])
@pytest.mark.parametrize("network", ["basic", "generic"])
def test_parameter_groups_partition_the_parameters(network, exits):
    net = NETWORKS[network](exits)
    groups = [list(net.branch_parameters()), list(net.exit_parameters()), list(net.backbone_parameters())]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}
    norms = net.branch_parameter_norms()
    expected = [torch.cat([p.flatten() for p in b.branch.parameters()]).norm() for b in net.blocks]
    torch.testing.assert_close(norms, torch.stack(expected))
    if network == "basic":   # full: exits 0..q own block q's downsample (conv, BN affine), exits 0..N-1 own fc
        fc, own = net.head.fc, 0
        if exits == "full":
            own = net.depth * (fc.weight.numel() + fc.bias.numel())
            for q in net.projections:
                own += (q + 1) * sum(p.numel() for p in net.blocks[q].skip.parameters())
        assert sum(p.numel() for p in groups[1]) == own


def test_exit_costs_count_the_plain_network_and_each_exit_path():
    net = NETWORKS["basic"]("ws")
    model = tiny("basic")
    counted = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(lambda m, i, o: counted.append(
                o.numel() * (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                             if isinstance(m, nn.Conv2d) else m.in_features)))
    model.eval()(inputs(batch=1))
    costs = net.exit_costs(16, 16)
    assert costs["network"] == sum(counted)
    early = costs["early_exit"]
    assert len(early) == net.depth + 1 and all(b > a for a, b in zip(early, early[1:]))
    assert early[-1] > costs["network"]    # every head on the way is paid for
    with pytest.raises(ValueError, match="spatial"):
        net.exit_costs(16)


# ------------------------------------------------------------------------------------------------ solve_ocp
def quadrants(count=48, seed=0, size=16):
    """Images whose class is a bright quadrant: learnable in a few steps by a tiny network."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    images = rng.normal(0, 0.3, (count, 3, size, size)).astype(np.float32)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        images[i, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 1.0
    return torch.as_tensor(images), labels


def tiny_resnet18(seed=0, exits="ws"):
    torch.manual_seed(seed)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=4, base=4)
    return model, tp.residual_network(model, exits=exits)


def stage_cost_ocp(net, gamma=0.1, decay=1e-4):
    images, labels = quadrants()
    loss = tp.CrossEntropy(num_classes=4)
    stage = tp.InputPenalty(decay) if gamma == 0 else gamma * loss + tp.InputPenalty(decay)
    return tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)


SOLVE = dict(method="sgd", steps=30, batch_size=16, options={"lr": 0.05}, progress=False)


@torch.no_grad()
def exit_losses(net, images, labels):
    net = copy.deepcopy(net)
    net.recalibrate_exit_statistics([images])
    logits = net.eval().exit_logits(images)
    return np.array([float(F.cross_entropy(l, torch.as_tensor(labels))) for l in logits])


@pytest.mark.parametrize("exits", ["ws", "full"])
def test_stage_cost_run_of_a_tiny_resnet18_trains_through_solve_ocp(exits):
    model, net = tiny_resnet18(exits=exits)
    ocp = stage_cost_ocp(net)
    before = exit_losses(net, ocp.inputs, ocp.labels)
    solution = tp.solve_ocp(ocp, test_data=quadrants(32, seed=1), **SOLVE)
    assert isinstance(solution, tp.ModuleSolution) and solution.status == tp.Status.MAX_STEPS
    objective = solution.history["objective"]
    assert objective[-5:].mean() < 0.5 * objective[:5].mean()
    after = solution.loss_per_layer("train")
    assert after.shape == (9,) and solution.accuracy_per_layer("test").shape == (9,)
    assert (after[1:] < before[1:]).all() and after[3:].max() < 0.5 * before[3:].min()   # the exits' losses fall
    assert solution.accuracy("train") > (0.9 if exits == "ws" else 0.6)        # chance: 0.25
    assert solution.output_residual_norms.shape == (8,) and solution.branch_parameter_norms.shape == (8,)
    if exits == "ws":     # measured: exit losses 1.41..1.49 before, 1.60 0.37 0.34 0.03 0.02 0.00 0.01 0.00 0.00 after
        assert solution.turnpike_layer(0.1) == 3
    layer = 3
    pruned = solution.prune(layer).eval()
    images = quadrants(8, seed=2)[0]
    with torch.no_grad():
        torch.testing.assert_close(pruned(images), solution.network.eval().exit_logits(images)[layer])
        torch.testing.assert_close(model.eval()(images), solution.network(images))   # the user's model trained


def test_standard_training_through_turnpike_equals_a_plain_pytorch_loop_step_for_step():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=4, base=4).double()
    plain = copy.deepcopy(model)
    images, labels = quadrants(24)
    images = images.double()
    net = tp.residual_network(model, exits="standard")
    ocp = stage_cost_ocp(net, gamma=0.0, decay=5e-4)
    ocp = tp.OCP(net, images, labels, stage_cost=ocp.stage_cost, terminal_cost=ocp.terminal_cost)
    seen = {}
    steps = 5

    def capture(step, value, module):     # the buffers after the last step's forward pass
        seen["buffers"] = {name: b.clone() for name, b in module.named_buffers()}

    tp.solve_ocp(ocp, method="sgd", steps=steps, options={"lr": 0.05}, progress=False, callback=capture)
    optimiser = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=2 * ocp.input_penalty)
    plain.train()
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(plain(images), torch.as_tensor(labels)).backward()
        optimiser.step()
    for (name, mine), theirs in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-13, atol=1e-15, msg=name)
    # BatchNorm statistics too, as they were after the last forward pass (the solution then recalibrates the
    # exit-path ones, the downsamples' here, as a "standard" run's exits are evaluated post hoc)
    wrapped = {id(b): name for name, b in net.named_buffers()}
    for (name, theirs), mine in zip(plain.named_buffers(), model.buffers()):
        torch.testing.assert_close(seen["buffers"][wrapped[id(mine)]], theirs, rtol=1e-13, atol=1e-15, msg=name)


def test_a_killed_run_resumes_to_the_same_weights_and_statistics(tmp_path):
    settings = dict(SOLVE, steps=12, checkpoint_every=3)
    full = tp.solve_ocp(stage_cost_ocp(tiny_resnet18(exits="full")[1]), **settings)
    path = tmp_path / "checkpoint.pt"
    interrupted = tp.solve_ocp(stage_cost_ocp(tiny_resnet18(exits="full")[1]), checkpoint=path,
                               callback=lambda s, v, m: s < 7, **settings)
    assert interrupted.status == "stopped" and path.exists()
    resumed = tp.solve_ocp(stage_cost_ocp(tiny_resnet18(exits="full")[1]), checkpoint=path, resume=True, **settings)
    for (name, a), b in zip(full.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(resumed.history["objective"], full.history["objective"])


def test_early_exit_tools_work_on_a_residual_network():
    """early_exit_predict / early_exit_curve accept a ResidualNetwork (they need stem, blocks, exit_logit(s),
    exit_costs) and refuse anything without exits."""
    net = randomise(NETWORKS["basic"]("ws")).eval()
    x = inputs(batch=10)
    with pytest.raises(ValueError, match="a ResidualNetwork"):
        tp.early_exit_predict(torch.nn.Linear(2, 2), x, 0.5)
    with torch.no_grad():
        confidence, predicted = net.exit_logits(x).softmax(-1).max(-1)
    for threshold in (0.0, 0.5, 1.0):
        predictions, exits = tp.early_exit_predict(net, x, threshold)
        stops = confidence > threshold
        stops[-1] = True
        first = stops.double().argmax(0)
        assert torch.equal(exits, first) and torch.equal(predictions, predicted.gather(0, first[None])[0])
    curve = tp.early_exit_curve(net, x, np.arange(10) % CLASSES, [0.0, 1.0])
    assert curve["mean_blocks"] == [0.0, 8.0] and len(curve["exit_accuracy"]) == 9
    costs = net.exit_costs(16, 16)
    assert curve["mean_compute"][1] == pytest.approx(costs["early_exit"][-1] / costs["network"])


def test_bf16_autocast_runs_the_exits():
    net = tp.residual_network(tiny("bottleneck").float(), exits="full")
    x = inputs().float()
    with torch.no_grad():
        exact = net.eval().exit_logits(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rough = net.exit_logits(x)
    assert rough.shape == exact.shape and torch.isfinite(rough).all()
    assert (rough.float() - exact).abs().max() < 0.1 * exact.abs().max()


@pytest.mark.parametrize("exits", ["ws", "full"])
@pytest.mark.parametrize("network", ["basic", "bottleneck", "generic-tanh"])
def test_exit_by_exit_and_batched_exits_give_the_same_gradients(network, exits):
    """The CPU's exit-by-exit path (which skips the ReLUs that follow a ReLU) trains as the batched one does."""
    nets = [randomise(NETWORKS[network](exits)).train() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = inputs()
    for net, batched in zip(nets, (True, False)):
        net.batched_exits = batched
        (net.exit_logits(x) ** 2).sum().backward()
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12 * float(a.grad.abs().max()), msg=name)


@pytest.mark.parametrize("name, count, depth", [
    ("resnet18", 11_689_512, 8), ("resnet34", 21_797_672, 16), ("resnet50", 25_557_032, 16),
    ("resnet101", 44_549_160, 33), ("resnet152", 60_192_808, 50), ("wide_resnet50_2", 68_883_240, 16),
    ("resnext50_32x4d", 25_028_904, 16)])
def test_every_built_in_model_has_torchvisions_published_parameter_count(name, count, depth):
    with torch.device("meta"):        # torchvision's sizes, 1,000 classes, never run
        net = tp.residual_network(tp.models.BUILT_IN_MODELS[name]())
    assert net.parameter_count() == count and net.depth == depth


def test_refreshing_exits_after_loading_weights_makes_them_the_loaded_networks(tmp_path):
    """Weights (and BatchNorm statistics) loaded into a wrapped model after wrapping: the full exits still hold
    the old copies and rows until refresh_exits(); after it, with the branches from block M on zeroed, exits
    M..N equal exit M and exit N the model's own output (Lemma 1 in eval mode), to 1e-12."""
    model = tiny("basic")
    net = tp.residual_network(model, exits="full")
    other = tiny("basic", seed=7)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():                          # pretrained weights and BatchNorm statistics of their own
        for p in other.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, buffer in other.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g, dtype=buffer.dtype) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g, dtype=buffer.dtype))
    path = tmp_path / "pretrained.pt"
    torch.save(other.state_dict(), path)
    tp.models.load_weights(model, path)
    M = 3
    zero_branches(net, M)
    net.eval()
    x = inputs()

    @torch.no_grad()
    def gap():
        logits = net.exit_logits(x)
        return float((logits[M:] - logits[M]).abs().max()), float((logits[-1] - model(x)).abs().max())

    stale, _ = gap()
    assert stale > 1e-3                             # the exits' rows and copies are those of before the load
    net.refresh_exits()
    after, output = gap()
    assert after < 1e-12 and output < 1e-12
