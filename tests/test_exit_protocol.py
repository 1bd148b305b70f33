"""The module systems' protocol (issue 29): an exit network written here from scratch, not a ResidualNetwork,
implements ``turnpike.systems.ModuleSystem`` and nothing else, and trains, gives its solution, prunes and exits
early with no change to the library."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import turnpike as tp
from turnpike.systems import ModuleSystem

CLASSES = 4


class ToyBlock(nn.Module):
    """x + conv3x3(relu(x)): an identity skip path."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv(torch.relu(x))


class ToyExitNetwork(nn.Module, ModuleSystem):
    """Stem conv, ``depth`` blocks, head = pixel mean then a linear map; exit k is the head on x_k (the skip
    paths are identities). No BatchNorm: there are no exit statistics to recalibrate."""

    def __init__(self, depth: int = 4, width: int = 6, in_channels: int = 1, num_classes: int = CLASSES):
        super().__init__()
        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(ToyBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    @property
    def input_shape(self):
        return (self.in_channels, None, None)

    @property
    def depth(self):
        return len(self.blocks)

    def forward(self, inputs, *, all_exits=False):
        if all_exits:
            return self.exit_logits(inputs)
        return self.exit_logit(self.depth, self.states(inputs)[-1])

    def states(self, inputs):
        x = self.stem(self.check_inputs(inputs))
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    def exit_logit(self, k, x_k):
        return self.head(x_k.mean(dim=(2, 3)))

    def exit_logits(self, inputs):
        return torch.stack([self.exit_logit(k, x) for k, x in enumerate(self.states(inputs))])

    def subresnet(self, depth, *, exits=None):
        sub = ToyExitNetwork(depth, self.width, self.in_channels, self.num_classes).to(self.head.weight)
        sub.load_state_dict({name: t for name, t in self.state_dict().items()
                             if not name.startswith("blocks.") or int(name.split(".")[1]) < depth})
        return sub

    def exit_costs(self, *spatial):
        pixels = math.prod(spatial)
        stem, block, head = 9 * self.in_channels * self.width * pixels, 9 * self.width ** 2 * pixels, \
            self.width * self.num_classes
        return {"network": stem + self.depth * block + head,
                "early_exit": [stem + k * block + (k + 1) * head for k in range(self.depth + 1)]}

    def recalibrate_exit_statistics(self, batches):
        return sum(1 for _ in batches)

    def branch_parameters(self):
        return self.blocks.parameters()

    def exit_parameters(self):
        return iter(())

    def branch_parameter_norms(self):
        return torch.stack([torch.cat([p.reshape(-1) for p in b.parameters()]).norm() for b in self.blocks])


def quadrant_images(count, seed):
    """Float images whose class is a bright quadrant, (count, 1, 8, 8), and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    images = rng.normal(0.0, 0.3, (count, 1, 8, 8))
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        images[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.5
    return torch.as_tensor(images, dtype=torch.float32), labels


@pytest.mark.parametrize("gamma", [0.3, 0.0], ids=["stage-cost", "standard"])
def test_an_exit_network_of_ones_own_trains_prunes_and_exits_early(gamma):
    torch.manual_seed(0)
    net = ToyExitNetwork()
    images, labels = quadrant_images(96, seed=0)
    test = quadrant_images(48, seed=1)
    loss = tp.CrossEntropy(num_classes=CLASSES)
    stage = gamma * loss + tp.InputPenalty(1e-4) if gamma else tp.InputPenalty(1e-4)
    ocp = tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)
    solution = tp.solve_ocp(ocp, method="adam", steps=60, batch_size=32, options={"lr": 0.02}, test_data=test,
                            progress=False)
    assert solution.status == tp.Status.MAX_STEPS and solution.accuracy("test") > 0.6      # chance: 0.25
    assert solution.loss_per_layer("test").shape == (net.depth + 1,)
    assert solution.branch_parameter_norms.shape == (net.depth,)
    # pruned at M, the network's output is exit M (Lemma 2), and it keeps that exit's accuracy
    net.eval()
    with torch.no_grad():
        exits = net.exit_logits(test[0])
        for depth in (1, 3):
            pruned = solution.prune(depth)
            torch.testing.assert_close(pruned(test[0]), exits[depth])
    # early exit: the curve over thresholds; at threshold 1 no input leaves early (the full network)
    curve = tp.early_exit_curve(net, test[0], test[1], thresholds=[0.5, 1.0])
    assert curve["accuracy"][-1] == pytest.approx(solution.accuracy("test"))
    assert curve["mean_blocks"][-1] == net.depth and curve["mean_blocks"][0] <= net.depth
    assert curve["mean_compute"][-1] > 1.0               # every head evaluated on the way to the output
    predicted, exited = tp.early_exit_predict(net, test[0], 0.5)
    assert predicted.shape == (48,) and int(exited.max()) <= net.depth


def test_a_module_system_missing_a_member_cannot_be_built():
    class Incomplete(nn.Module, ModuleSystem):
        def forward(self, inputs, *, all_exits=False):
            return inputs

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


@pytest.mark.parametrize("gamma", [0.3, 0.0], ids=["stage-cost", "standard"])
def test_the_solutions_objective_is_the_ocps_on_the_training_set(gamma):
    """J of the trained network, written out here: γ Σ_{k<N} mean CE(ŷ_k) + mean CE(ŷ_N) + r‖w‖² (eval mode)."""
    torch.manual_seed(1)
    net = ToyExitNetwork(depth=3)
    images, labels = quadrant_images(70, seed=2)              # 70 samples: chunks of 32, 32 and 6
    loss = tp.CrossEntropy(num_classes=CLASSES)
    r = 1e-3
    stage = gamma * loss + tp.InputPenalty(r) if gamma else tp.InputPenalty(r)
    ocp = tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)
    solution = tp.solve_ocp(ocp, method="sgd", steps=5, batch_size=16, options={"lr": 0.05}, eval_batch_size=32,
                            progress=False)
    net.eval()
    with torch.no_grad():
        logits = net.exit_logits(images).double()
        target = torch.as_tensor(labels)
        ce = [torch.nn.functional.cross_entropy(logits[k], target) for k in range(net.depth + 1)]
        expected = gamma * sum(ce[:-1]) + ce[-1] + r * sum((p.double() ** 2).sum() for p in net.parameters())
    assert solution.objective == pytest.approx(float(expected), rel=1e-6)


def test_standard_training_leaves_the_users_model_as_a_plain_loop_does():
    """3 SGD steps (momentum, weight decay) of a torchvision-layout ResNet-18 through solve_ocp without stage cost:
    every parameter and BatchNorm buffer of the user's model equals a plain loop's (the exits' statistics are
    recalibrated on a copy, which the solution holds), float64."""
    from turnpike.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=CLASSES, in_channels=3, base=4).double()
    plain = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(12, 3, 16, 16, generator=g, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (12,), generator=g)
    decay, lr = 1e-3, 0.05
    ocp = tp.OCP(tp.residual_network(model, exits="standard"), images, labels.numpy(),
                 stage_cost=tp.InputPenalty(decay / 2), terminal_cost=tp.CrossEntropy(num_classes=CLASSES))
    solution = tp.solve_ocp(ocp, method="sgd", steps=3, options={"lr": lr, "momentum": 0.9}, progress=False)
    optimiser = torch.optim.SGD(plain.parameters(), lr=lr, momentum=0.9, weight_decay=decay, fused=True)
    for _ in range(3):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(plain(images), labels).backward()
        optimiser.step()
    mine, theirs = model.state_dict(), plain.state_dict()
    assert set(mine) == set(theirs) and any("downsample.1.running_var" in name for name in mine)
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-9, atol=1e-12, msg=name)
    assert solution.network is not ocp.system                     # the evaluated, recalibrated copy
    recalibrated = dict(solution.network.named_buffers())
    moved = [name for name, t in ocp.system.named_buffers() if "running_var" in name
             and not torch.equal(t, recalibrated[name])]
    assert any(".skip." in name for name in moved), moved        # the projection skips' own: the copy's alone
