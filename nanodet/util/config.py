"""YAML configuration with attribute access, upstream NanoDet's keys and defaults, and strict keys.

Upstream NanoDet accepted any key and failed (or silently ignored it) mid-run; the original
continual-learning fork crashed hours in on ``schedule.epochs`` versus ``total_epochs``. Here every
key is checked when the file is loaded:

* plain sections (``device``, ``schedule``, ``log``...) against the defaults below;
* component nodes (those with a ``name``: backbone, neck, head, dataset, evaluator, optimizer,
  scheduler...) against the constructor signature of the class the name selects, so the builders
  and the checker can never disagree.

An unknown key fails with its dotted path, the file it came from and the nearest valid name.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, bad value, unreadable file."""


class CfgNode(dict):
    """A dict whose keys are also attributes, recursively (``cfg.model.arch.head.num_classes``).

    It also answers upstream NanoDet's yacs calls (``merge_from_file``, ``merge_from_list``,
    ``freeze``/``defrost``, ``clone``), so upstream user code runs on it; merges go through this
    module's reader and checker, so a bad key fails there as it does on load.
    """

    _frozen = False  # a class default, so that nodes being built or unpickled start mutable

    def __init__(self, data: Mapping | None = None) -> None:
        super().__init__()
        for key, value in (data or {}).items():
            self[key] = value

    def _check_mutable(self):
        if self._frozen:
            raise AttributeError("this config node is frozen (freeze()); call defrost() before changing it")

    def __setitem__(self, key, value):
        self._check_mutable()
        super().__setitem__(key, _to_node(value))

    def __delitem__(self, key):
        self._check_mutable()
        super().__delitem__(key)

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __copy__(self):  # copy's generic path would set the frozen flag before the items
        copied = CfgNode(dict(self))
        object.__setattr__(copied, "_frozen", self._frozen)
        return copied

    def __deepcopy__(self, memo):
        # Never frozen: code that copies a config does so to change the copy.
        return CfgNode(copy.deepcopy(dict(self), memo))

    def update(self, other: Mapping | Iterable[tuple[Any, Any]] = (), **kwargs: Any) -> None:  # nested dicts: nodes
        self._check_mutable()
        for key, value in dict(other, **kwargs).items():
            self[key] = value

    def __ior__(self, other):
        self.update(other)
        return self

    def clear(self) -> None:
        self._check_mutable()
        super().clear()

    def pop(self, *args: Any) -> Any:
        self._check_mutable()
        return super().pop(*args)

    def popitem(self) -> tuple[Any, Any]:
        self._check_mutable()
        return super().popitem()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def to_dict(self) -> dict:
        """Plain nested dicts and lists, e.g. for YAML or JSON dumps."""
        return _to_plain(self)

    def _replace(self, data: Mapping):
        self.clear()
        self.update(data)

    def freeze(self) -> CfgNode:
        """Refuse changes to this node and every node under it, as yacs does."""
        _set_frozen(self, True)
        return self

    def defrost(self) -> CfgNode:
        _set_frozen(self, False)
        return self

    def is_frozen(self) -> bool:
        return self._frozen

    def clone(self) -> CfgNode:
        """yacs' deep copy: an independent node, frozen if this one is."""
        copied = copy.deepcopy(self)
        return copied.freeze() if self._frozen else copied

    def merge_from_file(self, path: str | Path) -> CfgNode:
        """Merge a YAML file over this node (over the package defaults), checked as on load."""
        self._check_mutable()
        self._replace(read_config(path, base=self))
        return self

    def merge_from_list(self, key_values: Sequence) -> CfgNode:
        """yacs' ``["schedule.total_epochs", 5, "device.gpu_ids", "[0]", ...]``: dotted keys and values;
        a string value is read as YAML, as ``--set`` reads it.

        A whole config (one with ``config_path``, as ``read_config`` returns) is checked like a
        loaded file, so an unknown key or bad value fails; any other node has no schema here, so
        only keys it already holds can be set (yacs' rule).
        """
        self._check_mutable()
        key_values = list(key_values)
        if len(key_values) % 2:
            raise ConfigError(f"merge_from_list expects [key, value, key, value, ...], got an odd number of "
                              f"items: {key_values!r}")
        pairs = list(zip(key_values[0::2], key_values[1::2]))
        data = self.to_dict()
        whole_config = "config_path" in self
        for key, value in pairs:
            keys = str(key).split(".")
            if not whole_config:
                _require_existing(data, keys, f"merge_from_list {key!r}")
            if isinstance(value, str):
                value = _parse_yaml_value(value, f"merge_from_list {key!r}")
            _set_dotted(data, keys, value, f"merge_from_list {key!r}")
        if whole_config:
            changes = " ".join(f"{key}={value!r}" for key, value in pairs)
            validate_config(data, f"{self.get('config_path') or 'config'} with merge_from_list {changes}")
        self._replace(data)
        return self


def _set_frozen(value, frozen: bool):
    if isinstance(value, CfgNode):
        object.__setattr__(value, "_frozen", frozen)
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            _set_frozen(item, frozen)


def _require_existing(data: Mapping, keys: list[str], what: str):
    node = data
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            valid = node if isinstance(node, Mapping) else ()
            nearest = _nearest(key, valid, ".".join(keys[:depth]))
            raise ConfigError(f"{what}: unknown key '{'.'.join(keys[:depth + 1])}'{nearest}")
        node = node[key]


def _to_node(value):
    if isinstance(value, CfgNode):
        return value
    if isinstance(value, Mapping):
        return CfgNode(value)
    if isinstance(value, list):
        return [_to_node(v) for v in value]
    return value


def _to_plain(value):
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# Upstream NanoDet's defaults for the plain sections. A key absent here is unknown, except inside
# component nodes (checked against constructor signatures) and the open sections below.
DEFAULTS: dict[str, Any] = {
    "save_dir": "workspace/default",
    "config_path": None,  # set by the loader: the file this config came from
    "class_names": [],
    "model": {"arch": None, "weight_averager": None},
    # skip_bad_images: leave out (with a warning) the images that fail the check before training
    # (missing, empty, not decodable, another size than annotated) instead of stopping
    # validation_fraction: the share of the training images a continual run that selects an epoch
    # (--handover best) holds out to select on, drawn from the run's seed; never the test split
    "data": {"train": None, "val": None, "skip_bad_images": False, "validation_fraction": 0.1},
    "device": {
        "gpu_ids": -1,  # -1: CPU; a list of CUDA device indices otherwise
        "workers_per_gpu": 4,
        "batchsize_per_gpu": 32,
        # The fast path is on by default on a CUDA device and off on a CPU (today's path there):
        # auto: bf16 autocast on a GPU, fp32 on a CPU; 32, 16 or bf16 everywhere
        "precision": "auto",
        # the switches below: true on a CUDA device only, false never, "always" on a CPU too (for checks)
        "gpu_augment": True,  # augment training batches on the GPU (nanodet/data/gpu_augment/)
        "channels_last": True,  # channels-last memory format for the model and its inputs
        "compile": False,  # torch.compile the network while training: true or a mode (nanodet/trainer/compile.py)
        # compile each block class once for all its shapes (dynamic shapes) instead of once per shape
        "compile_dynamic": False,
        "cuda_graph": True,  # the whole training step as one CUDA graph (nanodet/trainer/captured_step.py)
        # cuDNN's timed search for the fastest algorithm of each new convolution shape: about 25 s
        # at a run's start on an H200 for no faster step there (docs/benchmark.md), so off
        "cudnn_benchmark": False,
        # intra-op threads of the training process while it trains on a GPU (0: PyTorch's default,
        # one per core). The process's own CPU work is tiny (a batch's boxes and warp matrices),
        # and with the loader's workers busy on every core a parallel op waits on a descheduled
        # thread: 4-5 ms for a 64-image batch's 3x3 inverses on an H100 host (docs/benchmark.md)
        "host_threads": 1,
    },
    "schedule": {
        "resume": None,
        "load_model": None,
        "optimizer": {"name": "AdamW", "lr": 0.001, "weight_decay": 0.05},
        "warmup": {"name": "linear", "steps": 500, "ratio": 0.0001},
        "total_epochs": 100,
        "lr_schedule": {"name": "CosineAnnealingLR", "T_max": 100, "eta_min": 0.00005},
        "val_intervals": 10,
        # model_last.ckpt (for resuming) after an epoch at most every this many seconds, and
        # after the last epoch; 0: after every epoch
        "checkpoint_interval": 10,
    },
    "grad_clip": 35,
    "evaluator": {"name": "CocoDetectionEvaluator", "save_key": "mAP"},
    "log": {"interval": 50},
    "test": {},
}

# Sections whose keys are free-form (nothing reads them by name).
OPEN_SECTIONS = {"test"}

# Component nodes: dotted path -> the classes its ``name`` selects. The packages that own the
# classes register them (nanodet/model, data and evaluator ``__init__``; ``nanodet/__init__.py``
# imports those packages, so every config read sees them): this lowest layer names none of them.
COMPONENT_PATHS = ("model.arch", "model.arch.backbone", "model.arch.fpn", "model.arch.head", "model.arch.aux_head",
                   "model.weight_averager", "data.train", "data.val", "evaluator", "schedule.optimizer",
                   "schedule.lr_schedule")
COMPONENTS: dict[str, Mapping] = {}
# Dict-valued constructor arguments whose own keys are checked against a fixed list (registered too).
NESTED_KEYS: dict[str, tuple] = {}


def _public_classes(module) -> dict:
    return {n: c for n, c in vars(module).items() if inspect.isclass(c) and not n.startswith("_")}


def register_components(registries: Mapping[str, Mapping], nested_keys: Mapping[str, Iterable] = ()) -> None:
    """Make ``validate_config`` check the nodes at these dotted paths against these classes
    (``{"model.arch.backbone": BACKBONES}``), and these dict arguments' keys against a list."""
    unknown = sorted(set(registries) - set(COMPONENT_PATHS))
    if unknown:
        raise ValueError(f"not component paths of the config: {unknown}; known: {list(COMPONENT_PATHS)}")
    COMPONENTS.update(registries)
    NESTED_KEYS.update({path: tuple(keys) for path, keys in dict(nested_keys).items()})


register_components({"schedule.optimizer": _public_classes(torch.optim),
                     "schedule.lr_schedule": _public_classes(torch.optim.lr_scheduler)})
# Arguments that the builders fill in themselves; a YAML file must not set them.
INJECTED_ARGS = {"self", "params", "optimizer", "mode", "dataset", "keep_classes"}
WARMUP_NAMES = ("constant", "linear", "exp")
# device.compile: torch.compile's modes; ``true`` means "default" (nanodet/trainer/compile.py).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: bool | str | None) -> str | None:
    """The torch.compile mode of the config value ``device.compile`` (None: do not compile)."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ValueError(f"device.compile: expected false, true or one of {', '.join(COMPILE_MODES)}; got {value!r}")


# device.precision values (besides "auto") and the Lightning precision each one means.
PRECISIONS = {32: "32-true", "32": "32-true", 16: "16-mixed", "16": "16-mixed",
              "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed",
              "32-true": "32-true"}


def _nearest(key: str, valid: Iterable[str], parent: str = "") -> str:
    """The valid key closest to ``key``, named by its full dotted path under ``parent``."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    where = f"{parent}." if parent else ""
    return f"; did you mean '{where}{match[0]}'?" if match else f"; valid keys: {sorted(valid)}"


def _signature_args(cls) -> tuple[set[str], bool]:
    """Keyword arguments a class accepts, and whether it also takes **kwargs."""
    params = inspect.signature(cls.__init__).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - INJECTED_ARGS, any(p.kind == p.VAR_KEYWORD for p in params)


def _check_component(node, path: str, source: str):
    if not isinstance(node, Mapping):
        raise ConfigError(f"{source}: '{path}' must be a mapping with a 'name', got {node!r}")
    if path not in COMPONENTS:  # only if the package owning them was never imported
        raise RuntimeError(f"no classes are registered for the config's '{path}' (import nanodet)")
    registry = COMPONENTS[path]
    name = node.get("name")
    if name not in registry:
        raise ConfigError(
            f"{source}: unknown {path}.name '{name}'{_nearest(str(name), registry)}"
        )
    accepted, takes_any = _signature_args(registry[name])
    for key, value in node.items():
        key_path = f"{path}.{key}"
        if key == "name":
            continue
        if not takes_any and key not in accepted:
            raise ConfigError(
                f"{source}: unknown key '{key_path}' for {name}{_nearest(key, accepted, path)}"
            )
        if key_path in COMPONENT_PATHS and value is not None:
            _check_component(value, key_path, source)
        elif key_path in NESTED_KEYS and value is not None:
            _check_plain(value, dict.fromkeys(NESTED_KEYS[key_path]), key_path, source)


def _check_plain(node, schema: Mapping, path: str, source: str):
    if not isinstance(node, Mapping):
        raise ConfigError(f"{source}: '{path}' must be a mapping, got {node!r}")
    for key, value in node.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in schema:
            raise ConfigError(f"{source}: unknown key '{key_path}'{_nearest(str(key), schema, path)}")
        if key_path in COMPONENT_PATHS:
            if value is not None:
                _check_component(value, key_path, source)
        elif key_path in OPEN_SECTIONS:
            continue
        elif isinstance(schema[key], Mapping) and value is not None:
            _check_plain(value, schema[key], key_path, source)


# Known numbers, checked at load so that a wrong one is named there and not met deep in training:
# (dotted key, type, minimum, what it counts).
NUMBERS = (
    ("device.batchsize_per_gpu", int, 1, "a number of images"),
    ("device.workers_per_gpu", int, 0, "a number of processes"),
    ("device.host_threads", int, 0, "a number of threads (0: PyTorch's default)"),
    ("schedule.total_epochs", int, 1, "a number of epochs"),
    ("schedule.val_intervals", int, 1, "a number of epochs"),
    ("schedule.warmup.steps", int, 0, "a number of steps"),
    ("schedule.warmup.ratio", float, 0, "a factor"),
    ("schedule.checkpoint_interval", float, 0, "a number of seconds"),
    ("grad_clip", float, 0, "a gradient norm (or null: no clipping)"),
    ("log.interval", int, 1, "a number of steps"),
)
OPTIONAL_NUMBERS = {"grad_clip"}
REQUIRED_SECTIONS = ("model.arch", "data.train", "data.val")


def _lookup(cfg: Mapping, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def validate_config(cfg: Mapping, source: str = "config") -> None:
    """Raise ConfigError naming the first unknown key or invalid value in ``cfg``."""
    _check_plain(cfg, DEFAULTS, "", source)
    warmup = cfg.get("schedule", {}).get("warmup", {})
    if warmup.get("name") not in WARMUP_NAMES:
        raise ConfigError(
            f"{source}: schedule.warmup.name must be one of {WARMUP_NAMES}, got {warmup.get('name')!r}"
        )
    for section in REQUIRED_SECTIONS:
        if _lookup(cfg, section) is None:
            raise ConfigError(f"{source}: no '{section}' section; every config needs model.arch, data.train "
                              "and data.val (see cfg/demo.yml)")
    for key, kind, minimum, what in NUMBERS:
        value = _lookup(cfg, key)
        if value is None and key in OPTIONAL_NUMBERS:
            continue
        number = kind is float and isinstance(value, (int, float)) or isinstance(value, kind)
        if isinstance(value, bool) or not number or value < minimum:
            raise ConfigError(f"{source}: {key} must be {what} >= {minimum}, got {value!r}")
    device = cfg.get("device") or {}
    for switch in ("gpu_augment", "channels_last", "cuda_graph"):
        if device.get(switch) not in (True, False, "always"):
            raise ConfigError(f"{source}: device.{switch} must be true, false or always, got {device.get(switch)!r}")
    for flag in ("cudnn_benchmark", "compile_dynamic"):
        if not isinstance(device.get(flag), bool):
            raise ConfigError(f"{source}: device.{flag} must be true or false, got {device.get(flag)!r}")
    if device.get("precision") != "auto" and device.get("precision") not in PRECISIONS:
        raise ConfigError(f"{source}: device.precision must be auto, 32, 16 or bf16, got {device.get('precision')!r}")
    try:
        compile_mode((cfg.get("device") or {}).get("compile"))
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    names = cfg.get("class_names") or []
    arch = (cfg.get("model") or {}).get("arch") or {}
    for head_key in ("head", "aux_head"):
        head = arch.get(head_key) or {}
        if names and "num_classes" in head and head["num_classes"] != len(names):
            raise ConfigError(
                f"{source}: model.arch.{head_key}.num_classes is {head['num_classes']} but "
                f"class_names has {len(names)} entries; they must agree"
            )
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"{source}: class_names has duplicates: {duplicates}")


def _merge(base: dict, update: Mapping) -> dict:
    """Recursively merge ``update`` into a copy of ``base``; component nodes are replaced whole."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and "name" not in value:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_yaml_value(raw: str, what: str):
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what}: the value is not valid YAML ({err})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"schedule.total_epochs=5"`` -> (["schedule", "total_epochs"], 5); the value is YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE with a dotted KEY, got {text!r}")
    return key.strip().split("."), _parse_yaml_value(raw, f"--set {text!r}")


def _set_dotted(data: dict, keys: list[str], value, what: str):
    """``data[k0][k1]... = value`` for plain nested dicts, making missing sections."""
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            prefix = ".".join(keys[: depth + 1])
            raise ConfigError(f"{what}: '{prefix}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(data, keys, value, f"--set {text!r}")
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def read_config(path: str | Path, overrides: Iterable[str] = (), base: Mapping | None = None) -> CfgNode:
    """Load a YAML config over the defaults, apply ``--set`` overrides and check every key.

    ``base``: values the file is merged over instead of the bare defaults (``merge_from_file``).
    """
    overrides = list(overrides)
    user = apply_overrides(_to_plain(read_yaml(path)), overrides)
    start = DEFAULTS if base is None else _merge(DEFAULTS, _to_plain(base))
    merged = _merge(start, user)
    source = str(path) + (" with --set " + " ".join(overrides) if overrides else "")
    if base is not None:
        source += " (merged into an existing config)"
    validate_config(merged, source)
    merged["config_path"] = str(path)
    return CfgNode(merged)


def load_config(cfg: CfgNode, path: str | Path, overrides: Iterable[str] = ()) -> CfgNode:
    """Upstream's API: fill ``cfg`` (usually ``nanodet.util.cfg``) in place from a file.

    A frozen ``cfg`` is filled too (upstream's load_config defrosts it) and stays frozen.
    """
    loaded = read_config(path, overrides)
    was_frozen = isinstance(cfg, CfgNode) and cfg.is_frozen()
    if was_frozen:
        cfg.defrost()
    cfg.clear()
    cfg.update(loaded)
    if was_frozen:
        cfg.freeze()
    return cfg


def config_name(cfg: Mapping) -> str:
    """Short name of a config, from its file name (``cfg/VOC.yml`` -> ``VOC``)."""
    return Path(cfg.get("config_path", "config")).stem


cfg = CfgNode(copy.deepcopy(DEFAULTS))
