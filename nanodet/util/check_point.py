"""Loading weights from upstream NanoDet's checkpoint formats and ours.

Accepted files: a Lightning checkpoint (``state_dict`` with ``model.`` keys, and ``avg_model.``
keys when an EMA was trained: those are the weights upstream evaluates, so they win), upstream's
``nanodet_model_best.pth`` (``{"state_dict": ...}`` without prefix), or a plain state dict; a
``module.`` prefix from DataParallel is stripped too.

No file is unpickled with code execution: every one is read by ``safe_load`` (torch's
``weights_only`` loader: tensors, plain containers, numbers and strings), which also admits
numeric numpy arrays and upstream NanoDet's config node (read as an OrderedDict). A file holding
anything else is refused with its name and the object it asked for.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .logger import get_logger


_NUMERIC_DTYPES = (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64)
# What ``safe_load`` admits besides torch's own allow-list. Numpy arrays are rebuilt from their
# bytes (object arrays are not admitted: their dtype is not listed); numpy 1 wrote the rebuilder
# under its old module name.
SAFE_GLOBALS = [
    np.ndarray, np.dtype, *(type(np.dtype(t)) for t in _NUMERIC_DTYPES),
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    # Upstream NanoDet's config node (a dict subclass) comes out as an OrderedDict: the same keys
    # and values, none of its behaviour.
    (OrderedDict, "nanodet.util.yacs.CfgNode"),
    (OrderedDict, "yacs.config.CfgNode"),
]


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable, refused or does not fit the model."""


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` that never runs code from the file (see the module docstring)."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch words every failure of its restricted loader alike; a refused object names itself.
        refused = re.search(r"GLOBAL (\S+) was not an allowed global|(?:build|SETITEMS?) .*but got <class '([^']+)'>",
                            str(err))
        if refused is None:  # not a pickle of ours at all (text, truncated): the caller says so
            raise
        culprit = next(g for g in refused.groups() if g)
        raise CheckpointError(
            f"{path}: refused: this {what} holds Python objects beyond tensors and plain containers ({culprit}), "
            "and loading them could run code. Save only state dicts and plain data in it") from None


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # Lightning checkpoints carry the config (plain containers); our own files only tensors.
        return safe_load(path)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None


def extract_model_state_dict(checkpoint: Mapping, source: str = "checkpoint") -> dict:
    """The detector's own state dict (keys as in ``model.state_dict()``) from any accepted format."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: holds no state dict (keys: {sorted(checkpoint)[:10]})")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: its state dict holds no tensors")
    averaged = {k[len("avg_model."):]: v for k, v in tensors.items() if k.startswith("avg_model.")}
    if averaged:
        tensors = averaged
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
        elif any(k.startswith(prefix) for k in tensors) and prefix == "model.":
            # A training-task checkpoint with extra members (a teacher, say): keep the model's.
            tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def load_model_weight(model: torch.nn.Module, checkpoint: str | Path | Mapping[str, Any], strict: bool = True,
                      source: str | None = None) -> torch.nn.Module:
    """Load ``checkpoint`` (a path or an already-read dict) into ``model``.

    With ``strict`` every key must match in name and shape; the error lists what differs, so a
    checkpoint of another config (say 80 versus 20 classes) is easy to diagnose. Without it,
    mismatching keys are skipped and logged, as upstream does for fine-tuning.
    """
    if isinstance(checkpoint, (str, Path)):
        source = source or str(checkpoint)
        checkpoint = read_checkpoint(checkpoint)
    source = source or "checkpoint"
    loaded = extract_model_state_dict(checkpoint, source)
    own = model.state_dict()
    missing = sorted(set(own) - set(loaded))
    unexpected = sorted(set(loaded) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(loaded[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(loaded)
        if loaded[k].shape != own[k].shape
    )
    if strict and (missing or unexpected or mismatched):
        lines = [f"{source} does not fit the model built from this config:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")
        raise CheckpointError("\n".join(lines))
    logger = get_logger()
    for key in missing:
        logger.warning("%s: no weights for %s; keeping its initial values", source, key)
    for entry in mismatched:
        logger.warning("%s: skipping %s", source, entry)
    usable = {k: v for k, v in loaded.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    return model


def save_model_state(path: str | Path, model: torch.nn.Module) -> None:
    """Upstream's plain weights file: ``{"state_dict": model.state_dict()}``."""
    from .io import atomic_torch_save

    atomic_torch_save(path, {"state_dict": model.state_dict()})
