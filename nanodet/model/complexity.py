"""Parameters and multiply-accumulates (MACs) of a detector, part by part.

MACs come from PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``), which
counts convolutions (depthwise and grouped ones included, by their real kernel size) and
matrix products at 2 FLOPs per multiply-accumulate, so MACs = FLOPs / 2. It does not count
element-wise work: BatchNorm, activations, additions, pooling, upsampling and conv biases. For
NanoDet-Plus that work is about 2.5 % of the conv MACs (see docs/deployment.md).

Parts are the detector's own attributes, so that code which freezes or trains a part (the
continual-learning methods) reads its numbers under the same name: ``backbone``, ``fpn`` (the
neck), ``head`` and, when the model has an assign-guidance module, ``aux_fpn`` and ``aux_head``
(training-time only). A part's MACs are those of one forward pass of one image.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from ..util.flops_counter import count_macs, count_macs_by_module, count_parameters  # noqa: F401

INFERENCE_PARTS = ("backbone", "fpn", "head")
TRAINING_ONLY_PARTS = ("aux_fpn", "aux_head")


def model_complexity(model: nn.Module, input_size: tuple[int, int] | list[int]) -> dict[str, dict[str, int]]:
    """Per part of a backbone -> fpn -> head detector: ``{part: {params, trainable_params,
    state_bytes, macs}}`` at ``input_size`` = (width, height), for one image.

    The model runs in eval mode on zeros (MACs do not depend on the values) and is put back in
    its previous mode. Parts the model lacks (``fpn`` None, no aux head) are left out.
    """
    width, height = (int(s) for s in input_size)
    reference = next(model.parameters())
    img = torch.zeros(1, 3, height, width, dtype=reference.dtype, device=reference.device)
    was_training = model.training
    model.eval()
    macs = {}
    try:
        macs["backbone"], feats = count_macs(model.backbone, img)
        neck_feats = feats
        if getattr(model, "fpn", None) is not None:
            macs["fpn"], neck_feats = count_macs(model.fpn, feats)
        if getattr(model, "head", None) is not None:
            macs["head"], _ = count_macs(model.head, neck_feats)
        if getattr(model, "aux_head", None) is not None:
            # The AGM as NanoDetPlus.forward_train feeds it: its own neck on the backbone
            # features, then its head on the main and auxiliary neck features side by side.
            macs["aux_fpn"], aux_feats = count_macs(model.aux_fpn, feats)
            dual = [torch.cat([f, a], dim=1) for f, a in zip(neck_feats, aux_feats)]
            macs["aux_head"], _ = count_macs(model.aux_head, dual)
    finally:
        model.train(was_training)
    return {part: {**count_parameters(getattr(model, part)), "macs": part_macs}
            for part, part_macs in macs.items()}


def sum_parts(complexity: dict[str, dict[str, int]], parts: Iterable[str] | None = None) -> dict[str, int]:
    """Totals of the entries of ``model_complexity``'s result over ``parts`` (default: all)."""
    parts = list(complexity) if parts is None else [p for p in parts if p in complexity]
    keys = next(iter(complexity.values())).keys() if complexity else ()
    return {key: sum(complexity[p][key] for p in parts) for key in keys}
