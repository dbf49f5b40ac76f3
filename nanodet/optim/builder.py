"""``build_optimizer(model, config)`` with upstream's per-parameter options.

``config`` is a ``schedule.optimizer`` mapping: ``name`` (a ``torch.optim`` class), that class's
arguments, and upstream's three extras, which split the parameters into groups:

* ``no_norm_decay``: no weight decay for the parameters of normalisation layers;
* ``no_bias_decay``: no weight decay for any layer's bias;
* ``param_level_cfg``: ``{name substring: {lr_mult, decay_mult}}``, scaling the learning rate
  and weight decay of the parameters whose name contains the substring (the first matching entry
  wins, as upstream).

As upstream, parameters that do not require gradients are left out. Keys the class does not take
fail here with the list of those it does, rather than as a TypeError from deep inside torch.

The trainer builds its optimizer itself (nanodet/trainer/task.py) from the config file, whose
``schedule.optimizer`` keys are checked against the torch class: the extras are for user code.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping

import torch
import torch.nn as nn

NORM_LAYER_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
                    nn.modules.instancenorm._InstanceNorm)
# param_level_cfg's multipliers and the optimizer argument each one scales.
MULTIPLIERS = {"lr_mult": "lr", "decay_mult": "weight_decay"}


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` optimizer class called ``name``."""
    found = getattr(torch.optim, name, None) if isinstance(name, str) else None
    if not (inspect.isclass(found) and issubclass(found, torch.optim.Optimizer)) or found is torch.optim.Optimizer:
        known = sorted(n for n, c in vars(torch.optim).items() if inspect.isclass(c)
                       and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
        raise ValueError(f"unknown optimizer name {name!r}; torch.optim has {known}")
    return found


def _base_value(arguments: Mapping, options: Mapping, key: str, why: str, optimizer_name: str) -> float:
    """The value of ``key`` every group starts from: the config's, else the class default."""
    if key not in arguments:
        raise ValueError(f"{why} needs an optimizer with '{key}', and {optimizer_name} has none")
    value = options.get(key, arguments[key].default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{why} needs a number for {optimizer_name}'s '{key}'; set it in the optimizer config")
    return float(value)


def _checked_param_level_cfg(param_level_cfg) -> dict:
    if not isinstance(param_level_cfg, Mapping):
        raise ValueError(f"param_level_cfg must map a parameter-name substring to {{lr_mult, decay_mult}}, "
                         f"got {param_level_cfg!r}")
    for pattern, multipliers in param_level_cfg.items():
        if not isinstance(multipliers, Mapping):
            raise ValueError(f"param_level_cfg[{pattern!r}] must be a mapping with lr_mult and/or decay_mult, "
                             f"got {multipliers!r}")
        unknown = sorted(set(multipliers) - set(MULTIPLIERS))
        if unknown:
            raise ValueError(f"param_level_cfg[{pattern!r}]: unknown keys {unknown}; valid: {sorted(MULTIPLIERS)}")
    return dict(param_level_cfg)


def build_optimizer(model: nn.Module, config: Mapping) -> torch.optim.Optimizer:
    """An optimizer over ``model``'s trainable parameters from a ``schedule.optimizer`` mapping
    (see the module docstring); one parameter group per distinct learning rate / weight decay."""
    options = copy.deepcopy(dict(config))
    if "name" not in options:
        raise ValueError("the optimizer config needs a 'name': a torch.optim class such as SGD or AdamW")
    name = options.pop("name")
    optimizer_cls = optimizer_class(name)
    no_norm_decay = bool(options.pop("no_norm_decay", False))
    no_bias_decay = bool(options.pop("no_bias_decay", False))
    param_level_cfg = _checked_param_level_cfg(options.pop("param_level_cfg", None) or {})
    arguments = inspect.signature(optimizer_cls).parameters
    accepted = set(arguments) - {"params"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"optimizer {name} does not take {unknown}; it takes {sorted(accepted)} and "
                         f"no_norm_decay, no_bias_decay, param_level_cfg")

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    overrides = {id(p): {} for _, p in named}
    for param_name, param in named:
        pattern = next((k for k in param_level_cfg if k in param_name), None)
        for multiplier, factor in param_level_cfg.get(pattern, {}).items():
            key = MULTIPLIERS[multiplier]
            base = _base_value(arguments, options, key, f"param_level_cfg {multiplier}", name)
            overrides[id(param)][key] = base * float(factor)
    no_decay = []
    if no_norm_decay:
        no_decay += [p for m in model.modules() if isinstance(m, NORM_LAYER_TYPES) for p in m.parameters(False)]
    if no_bias_decay:
        no_decay += [m.bias for m in model.modules() if isinstance(getattr(m, "bias", None), nn.Parameter)]
    if no_decay:
        _base_value(arguments, options, "weight_decay", "no_norm_decay / no_bias_decay", name)
        for param in no_decay:
            if id(param) in overrides:  # trainable
                overrides[id(param)]["weight_decay"] = 0.0

    groups: dict[tuple, list] = {}
    for _, param in named:
        groups.setdefault(tuple(sorted(overrides[id(param)].items())), []).append(param)
    if list(groups) == [()]:
        return optimizer_cls(groups[()], **options)
    return optimizer_cls([{"params": params, **dict(key)} for key, params in groups.items()], **options)
