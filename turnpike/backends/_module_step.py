r"""The module backend's training step with every tensor at a fixed address, run eagerly or as CUDA graphs.

A training step of a module system, as :class:`~turnpike.backends.ModuleBackend` takes it::

    eager    batch gathered, cropped, flipped, normalised          -> copied into static input buffers
    graph 1  BatchNorm buffers saved; gradients zeroed in place; forward; J; backward; penalty
    eager    the loop between the two: divergence guard, checkpoint (parameters before the update)
    eager    the scheduled learning rates written into their tensors (``fill_``)
    graph 2  the fused optimiser step

A graph replays the kernels it recorded on the memory it recorded them on, so the step must touch
the same tensors every time and never read a value back to the host: gradients are allocated once
and zeroed in place (not set to None), the optimiser is fused and takes its learning rate as a
tensor, inputs and labels go through static buffers, autocast keeps no weight cache between calls.
That *static* step is the same Python code whether it runs eagerly (on a CPU, and for the first
:data:`WARMUP_STEPS` steps of a phase on a GPU, which create the optimiser's state, choose cuDNN's
algorithms and allocate the gradients) or is captured once and replayed (``cuda_graph=True`` on a
CUDA device). A launch-bound network then costs one launch per graph instead of thousands.

The graphs hold the optimiser's state tensors: a new phase (a new optimiser) and a loaded
optimiser state (a resume) capture them anew. The last, shorter batch of an epoch has other shapes
than the static buffers: it runs the static step eagerly (on the same parameters, gradients and
state). Inside a process group DistributedDataParallel's gradient all-reduce runs between the
backward kernels and is not captured here: ``cuda_graph`` is refused there.
"""
from __future__ import annotations

import contextlib
import enum

import torch

from .. import _checks

#: eager static steps at the start of a phase before its graphs are captured (as torch's own
#: whole-network recipe warms up): the first optimiser step allocates its state, the first
#: convolutions let cuDNN choose algorithms, and nothing lazily initialised happens during capture
WARMUP_STEPS = 3

#: torch.compile modes that capture CUDA graphs of their own ("reduce-overhead" and "max-autotune")
_GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


class StepMode(enum.Enum):
    """How the module backend takes a training step."""

    EAGER = "eager"          # autograd's default: fresh gradient tensors every step
    STATIC = "static"        # the graph-ready step (fixed addresses, no host read) run eagerly
    GRAPHED = "graphed"      # the static step captured once as CUDA graphs and replayed


def step_mode(cuda_graph: bool, *, device: torch.device, world_size: int, compile_mode) -> tuple[StepMode, str]:
    """(mode, reason) for the ``cuda_graph`` setting; the reason says why a graph asked for is not used ("" when
    it is, or was not asked for).

    Refused where a graph cannot apply at all: inside a process group (DDP's all-reduce) and with a
    torch.compile mode that captures graphs of its own. On a device other than CUDA the graph-ready
    step runs eagerly: the same result, and a stated reason.
    """
    if not cuda_graph:
        return StepMode.EAGER, ""
    if world_size > 1:
        _checks.fail("cuda_graph", f"False inside a process group of {world_size} ranks (DistributedDataParallel "
                                   "reduces gradients with collectives between the backward kernels, which this "
                                   "step does not capture)", cuda_graph)
    if compile_mode in _GRAPHING_COMPILE_MODES:
        _checks.fail("cuda_graph", f"False with compile={compile_mode!r}, which captures CUDA graphs itself "
                                   "(or compile='default' / 'max-autotune-no-cudagraphs' inside this step's graph)",
                     cuda_graph)
    if device.type != "cuda":
        return StepMode.STATIC, (f"CUDA graphs need a CUDA device, got {device.type}: the graph-ready step ran "
                                 "eagerly")
    return StepMode.GRAPHED, ""


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    """``torch.backends.cudnn.benchmark`` set to ``on`` inside, restored after (torch's flag is global)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class StaticStep:
    """The two halves of a static training step, each run eagerly or replayed from its CUDA graph.

    ``gradient(images, labels) -> (J, output logits)`` (J a 0-dim tensor; its gradient left in the
    parameters' ``.grad``, zeroed in place first) and ``optimiser_step()`` are the backend's; this object
    owns the static input buffers of a full batch of ``batch_size`` samples, the graphs and the warm-up
    count.
    """

    def __init__(self, gradient, optimiser_step, *, batch_size: int, graphed: bool):
        self.gradient, self.optimiser_step = gradient, optimiser_step
        self.batch_size, self.graphed = batch_size, graphed
        self.images = self.labels = None          # static inputs, allocated at the first full batch
        self._outputs = None                      # (J, output logits) as graph 1 writes them
        self._graphs = None                       # (graph 1, graph 2) once captured
        self._pool = None
        self._warm = 0                            # eager static steps since the last reset
        self._stream = None                       # the warm-up's side stream (graphed), made at first use

    def reset(self) -> None:
        """Forget the graphs (they hold the optimiser's old state tensors): capture anew after warm-up."""
        self._graphs, self._outputs, self._warm = None, None, 0

    @property
    def captured(self) -> bool:
        return self._graphs is not None and self._graphs[1] is not None

    def evaluate(self, images, labels):
        """(J of the batch (a 0-dim tensor of its own), output logits, labels), the gradient of J in the
        parameters' ``.grad``. The logits and labels are the latest batch's until the next step."""
        if images.shape[0] != self.batch_size:                           # an epoch's last, shorter batch
            return (*self._eagerly(self.gradient, images, labels), labels)
        if self.images is None:
            self.images, self.labels = torch.empty_like(images), torch.empty_like(labels)
        self.images.copy_(images)
        self.labels.copy_(labels)
        if self._graphs is None and self.graphed and self._warm >= WARMUP_STEPS:
            self._pool = torch.cuda.graph_pool_handle()
            graph, self._outputs = self._capture(self.gradient, self.images, self.labels)
            self._graphs = (graph, None)
        if self._graphs is not None:
            self._graphs[0].replay()          # (capturing records the kernels without running them)
            value, final = self._outputs
            return value.clone(), final, self.labels      # J is rewritten at the next replay, kept in history
        self._warm += 1
        return (*self._eagerly(self.gradient, self.images, self.labels), self.labels)

    def update(self) -> None:
        """The optimiser step (learning rates already written into their tensors)."""
        if self._graphs is None:
            self._eagerly(self.optimiser_step)
            return
        if self._graphs[1] is None:
            self._graphs = (self._graphs[0], self._capture(self.optimiser_step)[0])
        self._graphs[1].replay()

    def _capture(self, function, *args):
        """(graph, output): ``function(*args)`` recorded as a CUDA graph in the step's memory pool (the two
        graphs share it: they replay in the order they were captured)."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: a data loader's pin-memory thread may use CUDA while this thread captures
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            output = function(*args)
        return graph, output

    def _eagerly(self, function, *args):
        """``function(*args)``; when graphed, on a side stream that the current one waits for, as torch's
        recipe warms up (lazy initialisation must not happen on the stream that captures later)."""
        if not self.graphed:
            return function(*args)
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            result = function(*args)
        torch.cuda.current_stream().wait_stream(self._stream)
        return result


def static_learning_rate(value: float, device: torch.device) -> torch.Tensor:
    """A learning rate as the 0-dim tensor a fused optimiser reads on the device: float32 where CUDA's fused
    kernels read a float, float64 on a CPU (its kernels read a double: the same step as a Python float)."""
    return torch.tensor(value, dtype=torch.float32 if device.type == "cuda" else torch.float64, device=device)
