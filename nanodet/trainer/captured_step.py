"""``device.cuda_graph``: the whole training step (forward, label assignment, losses,
distillation, backward, gradient clipping, optimizer) replayed as one CUDA graph.

At the paper's batch of 64 an eager NanoDet-Plus step is bound by the host: about 1,500 small
kernels, each launched from Python, cost more than the GPU needs to run them (docs/benchmark.md).
A CUDA graph launches them all at once, so the step costs what the GPU needs; and it needs no
compiler, so it is ready after a few steps instead of minutes.

What a graph needs, and how it is met here:

* **Static memory.** Every replay reads its inputs from the same tensors: each batch is copied
  into fixed buffers (``StaticBatch``): the images into a canvas of the input size, the ground
  truth already padded on the device (``gt_bboxes_padded``...) into a ``[B, G]`` block whose
  ``G`` is rounded up to a multiple of ``GT_ROWS_MULTIPLE``, so one graph serves every batch.
  A batch of another shape (a ragged last batch, more boxes than ever before) gets a graph of
  its own after one eager step.
* **No host synchronisation** inside the step: the batched assigner and the losses keep every
  value on the device; ``clip_grad_norm_`` scales on the device; the optimizer is built
  ``capturable`` with its learning rate as a device tensor, which the warm-up and the schedule
  fill between replays.
* **No host-side choices** inside the step: what a replay does is fixed at capture. Parts
  that choose on the host per step (Latent Replay's buffer draw), or whose capture is not yet
  proven on a GPU (pseudo-labels and box replay, written in fixed shapes), say
  ``capturable = False`` and train eagerly.
* **Warm-up** on a side stream before capture (CUDA's rule), which also lets cuDNN pick its
  algorithms and the optimizer create its state; those steps train as any other.

On a CPU (or with the graph off) the same object runs the same static steps eagerly, which is
how the tests check it against Lightning's automatic optimization.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..util.gt_batch import PADDED_GT_KEYS, PADDED_IGNORE_KEYS, pad_gt_batch

GT_ROWS_MULTIPLE = 16  # ground-truth rows per image are padded to a multiple of this
EAGER_STEPS_BEFORE_CAPTURE = 2  # steps of a new batch shape run eagerly before its graph is captured


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


class StaticBatch:
    """Fixed tensors a graph reads its batch from: ``img [B, 3, H, W]`` and the padded GT."""

    def __init__(self, batch: dict, canvas: tuple[int, int], gt_rows: int, ignore_rows: int) -> None:
        img = batch["img"]
        height, width = canvas
        channels_last = img.is_contiguous(memory_format=torch.channels_last) and not img.is_contiguous()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.tensors = {
            "img": torch.zeros((img.shape[0], img.shape[1], height, width), dtype=img.dtype,
                               device=img.device).contiguous(memory_format=memory_format),
            "gt_bboxes_padded": torch.zeros((img.shape[0], gt_rows, 4), device=img.device),
            "gt_labels_padded": torch.zeros((img.shape[0], gt_rows), dtype=torch.long, device=img.device),
            "gt_valid": torch.zeros((img.shape[0], gt_rows), dtype=torch.bool, device=img.device),
        }
        if ignore_rows:
            ignore_key, ignore_valid_key = PADDED_IGNORE_KEYS
            self.tensors[ignore_key] = torch.zeros((img.shape[0], ignore_rows, 4), device=img.device)
            self.tensors[ignore_valid_key] = torch.zeros((img.shape[0], ignore_rows), dtype=torch.bool,
                                                          device=img.device)

    def load(self, batch: dict) -> dict:
        """Copy ``batch`` into the fixed tensors (zero where it is smaller); returns them."""
        for key, static in self.tensors.items():
            value = batch[key]
            region = tuple(slice(0, n) for n in value.shape)
            if tuple(value.shape) != tuple(static.shape):
                static.zero_()
            static[region].copy_(value, non_blocking=True)
        return self.tensors


def with_padded_gt(batch: dict) -> dict:
    """The batch with its ground truth padded on its device, as the GPU augmentation gives it
    (a CPU-pipeline batch gets it here, by one asynchronous copy, outside the graph)."""
    if all(key in batch for key in PADDED_GT_KEYS):
        return batch
    return {**batch, **pad_gt_batch(batch, batch["img"].device, with_ignore=True).batch_entries()}


def batch_key(batch: dict, canvas: tuple[int, int]) -> tuple:
    """Which graph serves ``batch``: its size, its padded GT rows and ignore rows."""
    img = batch["img"]
    if img.shape[2] > canvas[0] or img.shape[3] > canvas[1]:
        raise ValueError(f"device.cuda_graph: a batch of {tuple(img.shape[2:])} images is larger than the "
                         f"input size {canvas}")
    ignore = batch.get(PADDED_IGNORE_KEYS[0])
    ignore_rows = 0 if ignore is None else _round_up(ignore.shape[1], GT_ROWS_MULTIPLE)
    return img.shape[0], _round_up(batch["gt_bboxes_padded"].shape[1], GT_ROWS_MULTIPLE), ignore_rows


class CapturedTrainingStep:
    """One optimizer step per call, as a CUDA graph replay once captured.

    Args:
        compute_loss: ``batch -> (loss, named loss terms)``, from the static tensors only.
        optimizer: a torch optimizer built ``capturable`` (``capturable_optimizer_options``) whose
            learning rates are device tensors (``lr_as_tensors``).
        parameters: the trained parameters (for gradient clipping).
        clip_norm: ``clip_grad_norm_``'s max norm; 0 or None: no clipping.
        canvas: (height, width) of the input: every batch is copied onto a canvas this size.
        use_graphs: capture (CUDA only); False runs every step eagerly, the same way.
    """

    def __init__(self, compute_loss: Callable, optimizer: torch.optim.Optimizer,
                 parameters: Iterable[torch.nn.Parameter], clip_norm: float | None, canvas: tuple[int, int],
                 use_graphs: bool = True) -> None:
        self.compute_loss = compute_loss
        self.optimizer = optimizer
        self.parameters = [p for p in parameters if p.requires_grad]
        self.clip_norm = clip_norm or None
        self.canvas = tuple(canvas)
        self.use_graphs = use_graphs
        self._static: dict[tuple, StaticBatch] = {}
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple]] = {}
        self._eager_steps: dict[tuple, int] = {}
        self.captures = 0  # graphs captured (one per batch shape)

    def __call__(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = with_padded_gt(batch)
        key = batch_key(batch, self.canvas)
        if key not in self._static:
            self._static[key] = StaticBatch(batch, self.canvas, key[1], key[2])
        static = self._static[key].load(batch)
        if key in self._graphs:
            graph, outputs = self._graphs[key]
            graph.replay()
            return outputs
        if not self.use_graphs:
            return self._step(static)
        if self._eager_steps.get(key, 0) < EAGER_STEPS_BEFORE_CAPTURE:
            self._eager_steps[key] = self._eager_steps.get(key, 0) + 1
            return self._step_on_side_stream(static)
        return self._capture(key, static)

    def _step(self, static: dict):
        """forward, losses, backward, clipping, optimizer: the body of the graph."""
        self.optimizer.zero_grad(set_to_none=True)
        return self._body(static)

    def _body(self, static: dict):
        # Every run of the body, eager, warm-up or captured, sees the same autocast state with its
        # cast cache off (a graph must not hold casts made during capture). The cache flag is in
        # torch.compile's guards: a warm-up under another flag than the capture's recompiled every
        # compiled block during capture, where a dynamic-shape kernel's first-launch autotuning
        # synchronises and the capture fails (H200, 2026-12-04, docs/benchmark.md).
        device_type = static["img"].device.type
        with torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type),
                            enabled=torch.is_autocast_enabled(device_type), cache_enabled=False):
            loss, states = self.compute_loss(static)
            loss.backward()
            if self.clip_norm:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm, foreach=True)
            self.optimizer.step()
        return loss.detach(), {k: v.detach() for k, v in states.items()}

    def _step_on_side_stream(self, static: dict):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = self._step(static)
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def _capture(self, key: tuple, static: dict):
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            outputs = self._body(static)
        self._graphs[key] = (graph, outputs)
        self.captures += 1
        graph.replay()  # capturing records the step without running it
        return outputs


def capturable_optimizer_options(optimizer_cls: type[torch.optim.Optimizer]) -> dict[str, Any]:
    """Options that make a torch optimizer safe to capture, where it has them, with its fused
    kernel where it has one: the capturable multi-tensor path computes its bias corrections one
    parameter at a time, about 1,300 small kernels per NanoDet-Plus step (profiled on an H200,
    docs/benchmark.md); the fused one is a few kernels for all parameters."""
    import inspect

    parameters = inspect.signature(optimizer_cls.__init__).parameters
    if "capturable" not in parameters:
        return {}
    return {"capturable": True, **({"fused": True} if "fused" in parameters else {})}


def lr_as_tensors(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Learning rates as device tensors, so a captured step reads the current one at each replay
    (a float would be baked into the graph)."""
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)


def set_learning_rates(optimizer: torch.optim.Optimizer, values: Iterable[float]) -> None:
    """Write ``values`` into the groups' learning rates (in place for tensors: graphs read them)."""
    for group, value in zip(optimizer.param_groups, values):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
