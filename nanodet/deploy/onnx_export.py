"""Export a detector's inference graph to ONNX at a fixed input size, and check it against PyTorch.

Two outputs are offered:

* raw (default): ``output`` [1, N, C + 4 * (reg_max + 1)], per prior the C class probabilities
  (sigmoid) then the 4 distance-distribution logits, as upstream NanoDet's ONNX graph;
* decoded (``decode=True``): ``boxes`` [1, N, 4] (x1, y1, x2, y2 in input pixels, clipped to
  the input) and ``scores`` [1, N, C] (sigmoid), decoded by the head's own ``decode`` (its
  ``Integral`` and ``distance2bbox``). Only score thresholding and NMS are left to the runtime.
* per level (``per_level=True``): ``level0``... [1, C + 4 * (reg_max + 1), h, w], each level's
  raw head output (class logits, distribution logits), for a microcontroller: no fp32 tail
  (sigmoid, reshape, concatenation) in the graph, so an int8 model is int8 to its outputs and
  the application decodes the few cells that score (``levels_to_raw`` gives back the raw output).

Priors are in row-major order, level after level (strides as in the head), N = sum over levels
of ceil(H / stride) * ceil(W / stride). The export uses PyTorch's TorchScript-based exporter
(``dynamo=False``), which needs no package beyond ``onnx``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn

from .onnx_eval import fixed_size_batches, onnx_session

DEFAULT_OPSET = 13
INPUT_NAME = "data"


class ExportedDetector(nn.Module):
    """The inference graph that is exported; run in PyTorch it gives the reference outputs.

    ``input_size`` is (width, height). The model's parts are shared, not copied.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int], decode: bool = False,
                 per_level: bool = False) -> None:
        super().__init__()
        if decode and per_level:
            raise ValueError("an export is decoded or per level, not both")
        self.model = model
        self.width, self.height = (int(s) for s in input_size)
        self.decode, self.per_level = decode, per_level
        priors = model.head.get_center_priors(self.height, self.width, torch.device("cpu"))
        self.register_buffer("priors", priors, persistent=False)

    @property
    def output_names(self) -> list[str]:
        if self.per_level:
            return [f"level{k}" for k in range(len(self.model.head.strides))]
        return ["boxes", "scores"] if self.decode else ["output"]

    def forward(self, img: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.backbone(img)
        if self.model.fpn is not None:
            feats = self.model.fpn(feats)
        head = self.model.head
        if self.per_level:
            outputs, _ = head.level_outputs(feats)
            return tuple(outputs)
        # forward_with_towers always gives logits (the head's forward applies the sigmoid only
        # while exporting), so this graph computes the same thing in PyTorch and in ONNX.
        preds, _ = head.forward_with_towers(feats)
        logits, distributions = preds.split([head.num_classes, preds.shape[-1] - head.num_classes], dim=-1)
        scores = logits.sigmoid()
        if not self.decode:
            return torch.cat([scores, distributions], dim=-1)
        boxes = head.decode(self.priors, distributions, max_shape=(self.height, self.width))
        return boxes, scores


def export_onnx(model: nn.Module, out_path: str | Path, input_size: Sequence[int], decode: bool = False,
                opset: int = DEFAULT_OPSET, per_level: bool = False) -> Path:
    """Write ``model``'s inference graph for one ``input_size`` (w, h) image to ``out_path``
    and check it with ``onnx.checker``. ``model`` itself is left untouched (a CPU copy in eval
    mode is exported: BatchNorm is folded into the convolutions)."""
    if opset < 13:
        raise ValueError(f"opset {opset}: at least 13 is needed (per-channel quantization)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    exported = ExportedDetector(copy.deepcopy(model).cpu().eval(), input_size, decode, per_level).eval()
    dummy = torch.zeros(1, 3, exported.height, exported.width)
    with torch.no_grad():
        torch.onnx.export(
            exported, (dummy,), str(out_path), input_names=[INPUT_NAME],
            output_names=exported.output_names, opset_version=opset, dynamo=False,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(out_path))
    return out_path


@torch.no_grad()
def max_abs_difference(model: nn.Module, onnx_path: str | Path, images: Sequence[torch.Tensor], decode: bool = False,
                       threads: int | None = None, per_level: bool = False) -> float:
    """Largest absolute difference, over ``images`` ([1, 3, H, W] tensors at the model's input
    size) and every output, between the ONNX model and ``model`` run in PyTorch (on the CPU)."""
    session = onnx_session(onnx_path, threads)
    input_name = session.get_inputs()[0].name
    width, height = session.get_inputs()[0].shape[3], session.get_inputs()[0].shape[2]
    reference = ExportedDetector(copy.deepcopy(model).cpu().eval(), (width, height), decode, per_level).eval()
    worst = 0.0
    for img in images:
        expected = reference(img.float().cpu())
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = session.run(None, {input_name: img.numpy().astype(np.float32)})
        for want, got in zip(expected, actual):
            worst = max(worst, float(np.abs(want.numpy() - got).max()))
    return worst


def dataset_images(dataset: torch.utils.data.Dataset, input_size: Sequence[int], count: int) -> list[torch.Tensor]:
    """The first ``count`` images of ``dataset`` as model inputs of exactly ``input_size``."""
    indices = range(min(count, len(dataset)))
    return [batch["img"] for batch in fixed_size_batches(dataset, input_size, indices)]
