r"""What a system must provide to be posed as an OCP and solved by :func:`turnpike.solve_ocp`.

Every system is a layer map :math:`x_{k+1} = f_k(x_k, u_k)`, k = 0..N-1, with a *readout*:
the logits the costs see at layer k. Two kinds exist, and the kind chooses the backend that
trains it (:mod:`turnpike.backends`):

- :class:`FlatSystem` (the flat backend): the controls live outside the system in one flat
  vector θ (ResNets (1) and (26), the neural ODE). The readout of layer k is the first
  ``width`` components of x_k (Remark 4 of the 2024 paper: C for classification, all n
  for tracking). The capabilities it implements (:class:`LayerMapSystem`, ...) say which
  gradient engines can train it.
- :class:`ModuleSystem` (the module backend): a ``torch.nn.Module`` that owns its
  parameters and buffers (the convolutional ResNet). Its readout of layer k is the
  intermediate output :math:`E_k(x_k)` of eq. (2) of the 2025 paper, computed by the
  module for all layers at once.

These are abstract base classes, not duck types: ``solve_ocp`` and ``OCP`` dispatch on
``isinstance`` and on what the class declares, never on ``hasattr`` probes.
"""
from __future__ import annotations

import abc

import numpy as np

from .. import _array
from .._checks import fail
from .._distributed import convert_to_synced_batch_norm


class System(abc.ABC):
    """Common to every system: a horizon N and an input shape."""

    depth: int                     # N, the number of layers (the OCP's horizon)

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple:
        """Shape of one sample's input x (without the batch axis)."""

    @abc.abstractmethod
    def check_readout(self, width: int, argument: str) -> None:
        """Refuse costs whose logits (``width`` components) this system cannot read out."""


class FlatSystem(System):
    """A system whose controls are one flat vector θ held by the flat backend.

    What a gradient engine needs from a system is a *capability*, an abstract class below that
    the system's class implements: :class:`LayerMapSystem` (the costate sweep),
    :class:`BufferedLayerMap` (its form on preallocated torch buffers), :class:`Trajectories` or
    :class:`DifferentiableObjective` (autograd), :class:`OwnGradient` (the system's own J and ∇J)
    and :class:`FixedStepScheme` (the exact adjoint of a Runge–Kutta scheme). The flat backend
    derives the engines a system can use from these classes
    (:func:`turnpike.backends.available_engines`); a system names no engine itself.
    """

    state_dim: int

    @property
    def input_shape(self) -> tuple:
        return (self.state_dim,)

    @property
    def layer_width(self) -> int:
        """Width of the hidden layer of one layer map (h of (26)); ``state_dim`` when it has none.
        A layer's work, batch × n × max(n, layer_width), sets the backend's engine and threads."""
        return self.state_dim

    def check_readout(self, width: int, argument: str) -> None:
        if width > self.state_dim:
            raise ValueError(f"{argument}: expected a cost reading at most state_dim={self.state_dim} "
                             f"components, got one reading {width}")

    def readout(self, states, width: int):
        """Logits of every layer: the first ``width`` state components (Remark 4), shape (..., width)."""
        if states.shape[-1:] != (self.state_dim,):
            raise ValueError(f"states: expected states of shape (..., {self.state_dim}) (the system's state_dim), "
                             f"got shape {tuple(states.shape)}")
        if width > self.state_dim:
            raise ValueError(f"width: expected at most state_dim={self.state_dim} components, got {width}")
        return states[..., :width]

    @property
    @abc.abstractmethod
    def parameter_count(self) -> int:
        """Length of θ."""

    @abc.abstractmethod
    def initial_controls(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        """A random θ (flat, float64)."""


class Trajectories(FlatSystem):
    """Capability: the states of every layer. The turnpike analysis of a solution reads them, and
    autograd differentiates the layer-sum objective J built from them (engine "autograd")."""

    @abc.abstractmethod
    def rollout(self, theta, x0):
        """All states x_0..x_N for the batch ``x0`` (B, n): shape (N+1, B, n)."""

    @abc.abstractmethod
    def truncate(self, theta, depth: int):
        """The first ``depth`` layers as a new (system, θ) pair."""

    @abc.abstractmethod
    def control_norms(self, theta) -> np.ndarray:
        """‖u_k‖ per layer."""


class LayerMapSystem(Trajectories):
    """Capability: a layer map x_{k+1} = f_k(x_k, u_k) with its vector-Jacobian product, all the
    costate sweep needs (engine "adjoint"): :meth:`step` forward, :meth:`step_backward` back.
    The rollout follows from :meth:`step`; autograd differentiates it (engine "autograd")."""

    def rollout(self, theta, x0):
        """All states x_0..x_N for the batch ``x0`` (B, n): shape (N+1, B, n), by :meth:`step`."""
        theta, x0 = _array.as_array("theta", theta), _array.as_array("x0", x0)
        if x0.ndim != 2 or x0.shape[1] != self.state_dim:
            raise ValueError(f"x0: expected shape (batch, {self.state_dim}), got {tuple(x0.shape)}")
        # unbound per layer: under autograd, indexing layer k's block out of θ adds a full-size zero
        # gradient per layer (quadratic in depth: it dominated dense Hessians); an unbind is one stack
        blocks = {name: (list(b) if isinstance(b, np.ndarray) else b.unbind(0))
                  for name, b in self.unpack(theta).items()}
        states = [x0]
        for k in range(self.depth):
            states.append(self.step(blocks, k, states[-1])[0])
        return _array.stack(states)

    @abc.abstractmethod
    def unpack(self, theta) -> dict:
        """``{field: views of shape (N, *block shape)}`` into θ (numpy or torch alike)."""

    @abc.abstractmethod
    def step(self, blocks: dict, k: int, x, out=None) -> tuple:
        """(x_{k+1}, cache) for the batch ``x`` (B, n). With ``out`` (a numpy (B, n) array, the sweep's
        preallocated state k+1) x_{k+1} is written into it and returned. ``cache`` is whatever
        :meth:`step_backward` needs; it must not alias ``out``."""

    @abc.abstractmethod
    def step_backward(self, blocks: dict, grads: dict, k: int, cache, costate):
        """Add λ_{k+1} ∂f_k/∂u_k to ``grads`` (layer k's views, zero on entry) and return λ_{k+1} ∂f_k/∂x_k,
        a new array, for the costate ``costate`` = λ_{k+1} (B, n)."""


class BufferedLayerMap(LayerMapSystem):
    """Capability: the layer map on preallocated torch tensors (engine "buffered": large layers, GPUs)."""

    @abc.abstractmethod
    def sweep_buffers(self, batch: int) -> dict:
        """``{name: shape}`` of the per-layer tensors the forward pass keeps for the backward one."""

    @abc.abstractmethod
    def step_into(self, blocks: dict, k: int, x, out, cache: dict) -> None:
        """x_{k+1} into ``out`` (B, n); fills ``cache`` (views of layer k's buffers)."""

    @abc.abstractmethod
    def step_backward_into(self, blocks, grads, k, x, cache, costate, out, scratch, decay) -> None:
        """∂J/∂u_k (+ ``decay``·u_k, the input penalty's gradient) into ``grads``; λ_{k+1} ∂f/∂x into
        ``out`` (None: skip it). ``scratch`` holds tensors of shape (B, n) and (B, layer_width)."""


class DifferentiableObjective(FlatSystem):
    """Capability: J as a differentiable torch scalar, computed by the system (engine "autograd";
    for systems whose objective is not the sum over layers of :class:`Trajectories`)."""

    @abc.abstractmethod
    def objective_tensor(self, ocp, theta, inputs, labels):
        """J(θ) on the batch (``theta`` and ``inputs`` torch tensors of one dtype), a torch scalar."""


class OwnGradient(DifferentiableObjective):
    """Capability: the system computes (J, ∇J) by its own means (engine "system"; it replaces
    "autograd", which would differentiate the same :meth:`objective_tensor` a second way)."""

    @abc.abstractmethod
    def objective(self, ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> tuple:
        """(J, ∇_θ J) as (float, numpy array of θ's dtype)."""


class FixedStepScheme(FlatSystem):
    """Capability: a continuous-time system solved by a fixed-step scheme whose exact adjoint the
    system computes (engine "scheme"), when its settings allow (:meth:`scheme_unavailable`)."""

    @abc.abstractmethod
    def scheme_unavailable(self) -> str | None:
        """None when the scheme adjoint applies to this system's settings; else why not (a sentence)."""

    @abc.abstractmethod
    def scheme_objective(self, ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> tuple:
        """(J, ∇_θ J) of the discretised OCP by the scheme's exact adjoint."""


class SavedLayout(abc.ABC):
    """How another class (e.g. a former version of a network) saved a network's states: a network given one reads
    those states too, its ``load_state_dict`` mapping the keys and a checkpoint's optimiser state being reordered."""

    @abc.abstractmethod
    def wrote(self, state: dict, prefix: str = "") -> bool:
        """Whether a module state dict (its keys under ``prefix``) is in this layout."""

    @abc.abstractmethod
    def state_dict(self, state: dict, network, prefix: str = "") -> dict:
        """A state in this layout as ``network``'s own."""

    @abc.abstractmethod
    def optimiser_order(self, network) -> list:
        """Names of ``network``'s parameters in the order an optimiser state saved with this layout lists them."""


class ModuleSystem(System):
    r"""A residual network with an exit after every block: a ``torch.nn.Module`` owning its parameters,
    trained by the module backend, whose readout of layer k is the intermediate output
    :math:`\hat y_k = E_k(x_k)` of eq. (2) of the 2025 paper.

    Training, its solution, pruning, export, early exit and the studies use these members and no
    others, so a new exit network plugs in by implementing them (``tests/test_exit_protocol.py`` writes
    one from scratch): the structure (``stem``, ``blocks``, ``depth``, ``input_shape``,
    ``num_classes``), the exits (:meth:`exit_logits`, :meth:`exit_logit`, :meth:`states`), pruning
    and costs (:meth:`subresnet`, :meth:`exit_costs`), the exits' statistics
    (:meth:`recalibrate_exit_statistics`), the parameter partition (:meth:`branch_parameters`,
    :meth:`exit_parameters`, :meth:`branch_parameter_norms`) and the input check (:meth:`check_inputs`).
    """

    num_classes: int
    #: V: inputs -> x_0
    stem: object
    #: the residual blocks in order, block k: x_k -> x_{k+1} (indexable, each a module)
    blocks: object

    def check_readout(self, width: int, argument: str) -> None:
        if width != self.num_classes:
            raise ValueError(f"{argument}: expected a cost on {self.num_classes} logits (the network's "
                             f"classes), got one reading {width}")

    @property
    @abc.abstractmethod
    def depth(self) -> int:
        """N, the number of residual blocks (exits 0..N)."""

    @abc.abstractmethod
    def forward(self, inputs, *, all_exits: bool = False):
        """The output E_N(x_N), (B, C); with ``all_exits`` :meth:`exit_logits` (DistributedDataParallel and
        ``torch.compile`` wrap the module's own call, so the trainer asks for all exits through it)."""

    @abc.abstractmethod
    def exit_logits(self, inputs):
        """Readouts of every layer k = 0..N: the intermediate outputs E_k(x_k), shape (N+1, B, C).

        ``forward(inputs, all_exits=True)`` must return the same, and ``forward(inputs)`` the output
        E_N(x_N) alone, (B, C). In training mode, exits with statistics of their own use the batch's."""

    @abc.abstractmethod
    def exit_logit(self, k: int, x_k):
        """E_k(x_k) of one exit from the state x_k, (B, C) (early exit evaluates exits one at a time)."""

    @abc.abstractmethod
    def states(self, inputs) -> list:
        """[x_0, ..., x_N] of a batch of inputs."""

    @abc.abstractmethod
    def subresnet(self, depth: int, *, exits=None):
        """SubResNet-``depth``: the first ``depth`` blocks, the remaining skip paths and the head, as a module
        whose output equals exit ``depth`` (Lemma 2); an exit network itself, ``exits`` its variant."""

    @abc.abstractmethod
    def exit_costs(self, *spatial: int) -> dict:
        """Multiply-adds per input of spatial size ``spatial``: ``{"network": the forward pass, "early_exit":
        list of N+1}``, entry k what early exit spends on an input that leaves at exit k."""

    @abc.abstractmethod
    def recalibrate_exit_statistics(self, batches) -> int:
        """Recompute the exits' running statistics over ``batches`` (inputs, or (inputs, ...) pairs) for a
        network trained without stage cost; returns the number of batches. Nothing else changes."""

    @abc.abstractmethod
    def branch_parameters(self):
        """Parameters of the residual branches w_F (weight decay of Theorem 1)."""

    @abc.abstractmethod
    def exit_parameters(self):
        """Parameters owned by the intermediate outputs only (none when they share the backbone's)."""

    @abc.abstractmethod
    def branch_parameter_norms(self):
        """(N,) tensor of ‖w_F,k‖, each branch's parameters as one vector."""

    @property
    def architecture(self) -> str:
        """The name reports and run fingerprints give the network (a checkpoint resumes only into a network of
        the same name and size)."""
        return type(self).__name__

    def optimiser_order(self, module_state: dict):
        """Names of the parameters in the order of the optimiser state saved beside ``module_state`` (a checkpoint),
        None when that is this network's own ``named_parameters`` order (a network that reads states of another
        layout says otherwise)."""
        return None

    def check_outputs(self, inputs) -> None:
        """One forward pass of a few prepared ``inputs`` in eval mode, without gradient (no statistic changes): the
        output must be a (B, num_classes) tensor and ``exit_logits`` an (N+1, B, num_classes) one. A ValueError names
        what the network returned or raised instead (a user's network is checked so before a run starts)."""
        import torch
        was_training = self.training
        batch = inputs.shape[0]
        try:
            self.eval()
            with torch.no_grad():
                try:
                    outputs = {"forward": self(inputs), "exit_logits": self.exit_logits(inputs)}
                except Exception as error:                     # noqa: BLE001 (the user's modules: any failure)
                    raise ValueError(f"model: expected a network whose stem, blocks and head map a batch of inputs "
                                     f"to logits, got one raising {type(error).__name__}: "
                                     f"{' '.join(str(error).split())} on a batch of {batch}") from None
        finally:
            self.train(was_training)
        for name, shape in (("forward", (batch, self.num_classes)), ("exit_logits", (self.depth + 1, batch,
                                                                                     self.num_classes))):
            out = outputs[name]
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
                got = f"a {tuple(out.shape)} tensor" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
                raise ValueError(f"model: expected a network whose {name} returns a {shape} tensor of logits (the "
                                 f"head returning the logits alone), got {got} from {name} on a batch of {batch}")

    def parameter_count(self) -> int:
        """Number of parameters, exit parameters included."""
        return sum(p.numel() for p in self.parameters())

    def check_inputs(self, inputs, name: str = "inputs"):
        """Float inputs (B, *input_shape) (None in ``input_shape``: any size there): shapes and dtype only,
        nothing that waits for the device (every forward pass checks); values are checked where inputs
        enter (the OCP, early exit)."""
        import torch
        shape = self.input_shape
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != len(shape) + 1 or any(
                s is not None and s != t for s, t in zip(shape, inputs.shape[1:])):
            described = ", ".join("any" if s is None else str(s) for s in shape)
            fail(name, f"a tensor of inputs (B, {described})", inputs)
        if not inputs.is_floating_point():
            fail(name, "floating-point inputs prepared as in training (uint8 images: scale and normalise them, "
                       "e.g. turnpike.data.normalise(images, mean, std))", inputs)
        return inputs

    def synchronise_batch_norm(self) -> None:
        """Normalise by the statistics of the batch over all ranks of a process group in training
        mode (``solve_ocp(..., sync_batchnorm=True)`` under DistributedDataParallel): every
        ``nn.BatchNorm2d`` becomes a :class:`turnpike.distributed.SyncedBatchNorm2d` holding the same tensors.
        A system with batch statistics outside BatchNorm2d modules extends this."""
        convert_to_synced_batch_norm(self)

