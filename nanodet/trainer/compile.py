"""``device.compile``: the detector's backbone, neck and head under ``torch.compile`` while a fit
trains, and plain modules again when it ends.

The network is about a thousand small kernels per step, so training is bound by Python and
launch overhead; compiling fuses BatchNorm, activations and shuffles into fewer kernels (see
docs/benchmark.md).

Each block (a ShuffleNet unit, a depthwise module of the neck, a tower conv of the head) is
compiled on its own, in place (``nn.Module.compile``): regional compilation. Blocks of one class
share their graphs, so a compilation is a fraction of a whole part's, and a graph break costs one
block. In place keeps the state_dict keys (no ``_orig_mod.`` prefix), so checkpoints stay
upstream's. ``restore`` removes the compiled callables when the fit ends, so the model leaves every
fit as plain modules (a deep copy drops them anyway); a teacher gets compiled blocks of its own.
Evaluation runs eagerly (``eager``), so eval-mode BatchNorm and smaller evaluation batches never
trigger a recompilation.

Inside the captured step (``device.cuda_graph``), the default on a GPU, the modes that make CUDA
graphs of their own are replaced by their graph-free variants (``graph_free_mode``). Measured on
one H200 (tools/step_ceiling.py, batch 64, bf16, channels_last, the detection loss, torch 2.11,
2026-12-02): the captured full-model step went from 18.32 ms eager to 14.98 ms (4,273 img/s), the
LD student's from 11.35 to 9.06 ms (7,063 img/s). The first five steps took 115 s with inductor's
on-disk cache cold and 35 s warm for the full model (29.5 s eager: CUDA's start is in all three),
14.5 s and 3.9 s for the student (0.3 s eager). Whole parts compiled as one graph each took 161 s
cold and 40 s warm, for a 15.86 ms step. So compiling pays for long tasks and re-runs; it is off
by default.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Iterable, Iterator

import torch

from ..util.config import COMPILE_MODES as MODES, compile_mode  # noqa: F401 (the config's values)

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def graph_free_mode(mode: str) -> str:
    """The mode to compile with inside a captured step (``device.cuda_graph``), which is a CUDA
    graph already: torch.compile's own graphs cannot be captured inside another."""
    return {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)


def compiled_regions(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The blocks ``module`` is made of, each compiled on its own: containers (ModuleList,
    Sequential of blocks) are opened, and every block that holds parameters is a region."""
    container = isinstance(module, torch.nn.ModuleList) or (
        isinstance(module, torch.nn.Sequential) and any(next(c.children(), None) is not None for c in module))
    if container:
        for child in module.children():
            yield from compiled_regions(child)
    elif next(module.parameters(), None) is not None:
        yield module


def compile_detector(model: torch.nn.Module, mode: str, backend: str = "inductor",
                     dynamic: bool = False) -> list[torch.nn.Module]:
    """Compile the blocks of ``model``'s backbone, neck and head in place, each on its own
    (regional compilation); returns them, for ``restore``. ``dynamic`` (``device.compile_dynamic``):
    sizes are symbolic, so the blocks of one class share one graph whatever their channels and
    resolution (fewer compilations; whether their kernels are as fast is for the benchmark to say).
    ``backend`` other than inductor is for tests (torch.compile's modes are inductor's)."""
    options = {"mode": mode, "dynamic": dynamic} if backend == "inductor" else {"dynamic": dynamic}
    parts = [part for part in (model.backbone, model.fpn, model.head) if part is not None]
    regions = [region for part in parts for child in part.children() for region in compiled_regions(child)]
    # Blocks of one class share their forward's code, and so dynamo's cache of graphs for it: one
    # entry per shape (16 ShuffleNet blocks, 12 depthwise modules...). The default limit of 8
    # would silently leave the rest eager.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 128)
    for region in regions:
        region.compile(backend=backend, **options)
    return regions


def restore(regions: Iterable[torch.nn.Module]) -> None:
    """Plain modules again: ``__call__`` runs the module's own forward."""
    for region in regions:
        region.__dict__.pop("_compiled_call_impl", None)


def eager() -> AbstractContextManager:
    """A context in which compiled modules run their plain forward, without recompiling."""
    return torch.compiler.set_stance("force_eager")


def mark_step_begin(mode: str | None) -> None:
    """Tell CUDA graphs (the modes that use them) that a new training step starts, so outputs
    of the previous step's graphs may be overwritten."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()

