"""``device.compile``: the detector's backbone, neck and head under ``torch.compile`` while a fit
trains, and plain modules again when it ends.

The network is about a thousand small kernels per step, so training is bound by Python and
launch overhead; compiling fuses BatchNorm, activations and shuffles into fewer kernels (see
docs/benchmark.md).

Each part is compiled in place (``nn.Module.compile``), which keeps the state_dict keys (no
``_orig_mod.`` prefix), so checkpoints stay upstream's. ``restore`` removes the compiled callables
when the fit ends, so the model leaves every fit as plain modules (a deep copy drops them
anyway); a teacher gets compiled parts of its own. Evaluation runs eagerly (``eager``), so
eval-mode BatchNorm and smaller evaluation batches never trigger a recompilation.

Which mode: ``reduce-overhead`` (CUDA graphs) is the one that pays here, because the step is
bound by the host launching kernels; ``default`` alone was slower than eager in the Lightning loop
on an H100 (docs/benchmark.md). Compiling took one to three minutes there, so it pays for long
tasks, not for a few hundred steps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Iterable

import torch

from ..util.config import COMPILE_MODES as MODES, compile_mode  # noqa: F401 (the config's values)

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def graph_free_mode(mode: str) -> str:
    """The mode to compile with inside a captured step (``device.cuda_graph``), which is a CUDA
    graph already: torch.compile's own graphs cannot be captured inside another."""
    return {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)


def compile_detector(model: torch.nn.Module, mode: str, backend: str = "inductor") -> list[torch.nn.Module]:
    """Compile ``model``'s backbone, neck and head in place (those it has); returns them, for
    ``restore``. ``backend`` other than inductor is for tests (torch.compile's modes are
    inductor's)."""
    options = {"mode": mode} if backend == "inductor" else {}
    parts = [part for part in (model.backbone, model.fpn, model.head) if part is not None]
    for part in parts:
        part.compile(backend=backend, **options)
    return parts


def restore(parts: Iterable[torch.nn.Module]) -> None:
    """Plain modules again: ``__call__`` runs the module's own forward."""
    for part in parts:
        part.__dict__.pop("_compiled_call_impl", None)


def eager() -> AbstractContextManager:
    """A context in which compiled modules run their plain forward, without recompiling."""
    return torch.compiler.set_stance("force_eager")


def mark_step_begin(mode: str | None) -> None:
    """Tell CUDA graphs (the modes that use them) that a new training step starts, so outputs
    of the previous step's graphs may be overwritten."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()

