"""Parameter and multiply-accumulate (MAC) counts of any module, and upstream NanoDet's
``get_model_complexity_info`` (tools/flops.py's call) on them. MACs come from PyTorch's
``FlopCounterMode`` (FLOPs / 2); ``nanodet.model.complexity`` splits a detector into its parts
with these counters.

Upstream's "FLOPs" are multiply-accumulates (it reports nanodet-plus-m_320 at 0.9 GFLOPs), and so
are these: the numbers read the same as upstream's, and element-wise work (BatchNorm,
activations) is left out as there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module) -> dict:
    """``params`` and ``trainable_params`` (``requires_grad``) of ``module``, and ``state_bytes``:
    the bytes of its parameters and buffers (what holding it in memory costs)."""
    params = list(module.parameters())
    state_bytes = sum(t.numel() * t.element_size() for t in (*params, *module.buffers()))
    return {
        "params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "state_bytes": state_bytes,
    }


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """``(MACs, output)`` of calling ``fn(*args, **kwargs)`` once, without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = fn(*args, **kwargs)
    return counter.get_total_flops() // 2, output


def count_macs_by_module(module: nn.Module, *args: Any, **kwargs: Any) -> tuple[dict[str, int], Any]:
    """``({submodule path: MACs}, output)`` of calling ``module(*args, **kwargs)`` once, without
    gradients; ``""`` is ``module`` itself (its total), ``"backbone.stage2"`` a submodule's share.
    Same counter as ``count_macs``; a submodule that does no counted work is absent."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = module(*args, **kwargs)
    root = type(module).__name__
    macs = {}
    for name, per_op in counter.get_flop_counts().items():
        if name == root or name.startswith(root + "."):
            macs[name[len(root) + 1:]] = sum(per_op.values()) // 2
    macs.setdefault("", counter.get_total_flops() // 2)
    return macs, output


def flops_to_string(flops: float) -> str:
    """Upstream's format: ``"1.23 GFLOPs"``."""
    return f"{round(flops / 1e9, 2)} GFLOPs"


def params_to_string(params: int) -> str:
    """Upstream's format: ``"1.17 M"``, ``"3.5 k"`` or the plain count."""
    if params >= 1e6:
        return f"{round(params / 1e6, 2)} M"
    if params >= 1e3:
        return f"{round(params / 1e3, 2)} k"
    return str(params)


def get_model_complexity_info(model: nn.Module, input_shape: Sequence[int], print_per_layer_stat: bool = True,
                              as_strings: bool = True, input_constructor: Callable | None = None,
                              flush: bool = False, ost: TextIO = sys.stdout) -> tuple[str, str] | tuple[int, int]:
    """``(flops, params)`` of one forward pass of ``model`` on a zero batch of one ``input_shape``
    (C, H, W) input, as upstream returns them: MACs and trainable parameters, numbers or strings.

    ``input_constructor(input_shape)`` builds the input instead: a mapping is passed as keyword
    arguments, anything else as the one argument. The model runs in eval mode and is put back in
    its previous mode. ``print_per_layer_stat`` writes each direct child's share to ``ost``.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape:
        raise ValueError("input_shape must be the shape of one input without the batch, e.g. (3, 320, 320)")
    if input_constructor is not None:
        inputs = input_constructor(input_shape)
        args, kwargs = ((), dict(inputs)) if isinstance(inputs, Mapping) else ((inputs,), {})
    else:
        reference = next(model.parameters(), None)
        dtype, device = (reference.dtype, reference.device) if reference is not None else (torch.float32, "cpu")
        args, kwargs = (torch.zeros((1, *input_shape), dtype=dtype, device=device),), {}
    was_training = model.training
    model.eval()
    try:
        macs, _ = count_macs_by_module(model, *args, **kwargs)
    finally:
        model.train(was_training)
    total_macs = macs[""]
    params = count_parameters(model)["trainable_params"]
    if print_per_layer_stat:
        for name, child in model.named_children():
            child_params = count_parameters(child)["trainable_params"]
            child_macs = macs.get(name, 0)
            print(f"{name} ({type(child).__name__}): {params_to_string(child_params)} params "
                  f"({100 * child_params / max(params, 1):.2f}%), {flops_to_string(child_macs)} "
                  f"({100 * child_macs / max(total_macs, 1):.2f}%)", file=ost, flush=flush)
        print(f"total: {params_to_string(params)} params, {flops_to_string(total_macs)}", file=ost, flush=flush)
    if as_strings:
        return flops_to_string(total_macs), params_to_string(params)
    return total_macs, params
