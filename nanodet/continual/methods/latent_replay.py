"""Latent Replay: replay stored backbone feature maps instead of images (backbone frozen).

In the Latent Distillation paper's figures, never released as code. With the backbone frozen
(see ``FrozenBackbone``), the buffer keeps, for each buffered image, the backbone's feature maps
of its un-augmented input (fp16, or int8 with a scale per map) and its own task's boxes in that
input's pixels. Every batch is half current-task images, run through the frozen backbone, and
half stored feature maps; both halves go through the student's neck and head together. Buffer
selection is the image buffer's (random or class-balanced, ``buffer.py``); ``buffer_bytes`` counts
the stored maps, scales and boxes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...data.collate import collate_and_pad
from ...trainer.builders import build_train_loader
from ...util.check_point import safe_load
from ...util.io import atomic_torch_save
from .base import ContinualMethod, with_ground_truth
from .buffer import BufferItem, ImageReplay
from .frozen_backbone import FrozenBackbone
from .replay import ReplaySettings
from .settings import freeze_backbone_from_setting, setting
from .teacher import StudentOutputs

if TYPE_CHECKING:
    from ...util.config import CfgNode
    from .base import TaskContext
    from .parts import Part

LATENT_DTYPES = ("fp16", "int8")


def quantize(feature: torch.Tensor, dtype: str) -> tuple[torch.Tensor, float]:
    """One image's feature map -> (stored tensor, scale)."""
    if dtype == "fp16":
        return feature.half(), 1.0
    scale = float(feature.abs().max().clamp(min=1e-8)) / 127.0
    return torch.clamp(torch.round(feature / scale), -127, 127).to(torch.int8), scale


def dequantize(stored: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    if stored.dtype == torch.int8:
        return stored.float() * scales.view(-1, *([1] * (stored.dim() - 1)))
    return stored.float()


@dataclasses.dataclass(frozen=True)
class LatentReplaySettings(ReplaySettings):
    latent_dtype: str = setting("fp16", str, "storage of Latent Replay's feature maps", choices=LATENT_DTYPES)
    freeze_backbone_from: Optional[int] = freeze_backbone_from_setting()


class LatentReplay(ContinualMethod):
    """A frozen backbone and a buffer of its feature maps (the ``buffer_size`` setting's part)."""

    name = "latent_replay"
    Settings = LatentReplaySettings

    def build_parts(self) -> list[Part]:
        return [FrozenBackbone(self.settings.freeze_backbone_from)]

    def buffer_part(self) -> LatentBuffer:
        if self.settings.label_propagation is not None:
            raise ValueError("--label-propagation labels an image buffer; Latent Replay's holds feature maps "
                             "with the boxes they were stored with")
        frozen = self.part(FrozenBackbone)
        return LatentBuffer(self.settings.buffer_size, self.settings.buffer_policy,
                            self.settings.latent_dtype, frozen)


class LatentBuffer(ImageReplay):
    """The image buffer's selection, stored as the frozen backbone's feature maps."""

    capturable = False  # each step draws its replayed maps on the host

    def __init__(self, size: int, policy: str, latent_dtype: str, frozen_backbone: FrozenBackbone):
        super().__init__(size, policy)
        self.latent_dtype = latent_dtype
        self.frozen_backbone = frozen_backbone
        self.latents: dict[tuple, dict] = {}  # (task, image id) -> maps, scales, boxes, labels
        self._device_buffer = None

    @staticmethod
    def key(item: BufferItem) -> tuple[int, int]:
        return item.task, item.record.id

    # ------------------------------------------------------------------ filling the buffer
    def on_task_end(self, context: TaskContext, model: torch.nn.Module) -> None:
        if context.index + 1 < self.frozen_backbone.freeze_task(context.cfg):
            raise ValueError("Latent Replay stores frozen-backbone features: the backbone must be frozen "
                             "from the task after this one at the latest")
        super().on_task_end(context, model)  # the image buffer's selection of ``self.buffer``
        kept = {self.key(item) for item in self.buffer}
        self.latents = {k: v for k, v in self.latents.items() if k in kept}
        new = [item for item in self.buffer if self.key(item) not in self.latents]
        if new:
            self._store(context, model, new)
        self._device_buffer = None

    @torch.no_grad()
    def _store(self, context, model, items):
        dataset = context.train_dataset.without_augmentation().with_records([i.record for i in items])
        height, width = self.input_hw(context.cfg)
        device = next(model.parameters()).device
        was_training = model.backbone.training
        model.backbone.eval()
        for item, sample in zip(items, dataset):
            batch = collate_and_pad([sample], divisible=32)
            img = pad_to(batch["img"], height, width).to(device)
            maps, scales = zip(*(quantize(f[0].cpu(), self.latent_dtype) for f in model.backbone(img)))
            self.latents[self.key(item)] = {
                "maps": list(maps), "scales": list(scales),
                "boxes": np.asarray(sample["gt_bboxes"], np.float32),
                "labels": np.asarray(sample["gt_labels"], np.int64),
            }
        model.backbone.train(was_training)

    @staticmethod
    def input_hw(cfg: CfgNode) -> tuple[int, int]:
        width, height = cfg.data.train.input_size
        return -(-int(height) // 32) * 32, -(-int(width) // 32) * 32

    def save_state(self, task_dir: Path) -> None:
        super().save_state(task_dir)  # the buffer's records, as the image buffer
        atomic_torch_save(Path(task_dir) / "latent_buffer.pt", {
            "latent_dtype": self.latent_dtype,
            "latents": {f"{t}:{i}": v for (t, i), v in self.latents.items()},
        })

    def load_state(self, task_dir: Path) -> None:
        super().load_state(task_dir)
        path = Path(task_dir) / "latent_buffer.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the latent buffer of a finished task is missing")
        stored = safe_load(path, what="latent buffer")
        self.latents = {tuple(int(x) for x in k.split(":")): v for k, v in stored["latents"].items()}
        self._device_buffer = None

    def buffer_bytes(self) -> int:
        total = 0
        for entry in self.latents.values():
            total += sum(m.numel() * m.element_size() for m in entry["maps"])
            total += 4 * len(entry["scales"]) * (self.latent_dtype == "int8")
            total += entry["boxes"].nbytes + entry["labels"].nbytes
        return total

    # ------------------------------------------------------------------ training
    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> None:
        if self.latents:
            entries = [self.latents[self.key(item)] for item in self.buffer]
            levels = len(entries[0]["maps"])
            self._device_buffer = {
                "maps": [torch.stack([e["maps"][lvl] for e in entries]).to(device) for lvl in range(levels)],
                "scales": [torch.tensor([float(e["scales"][lvl]) for e in entries], device=device)
                           for lvl in range(levels)],
                "boxes": [e["boxes"] for e in entries], "labels": [e["labels"] for e in entries],
            }

    def train_dataloader(self, context: TaskContext, cfg: CfgNode,
                         device: torch.device | str) -> Iterable[dict[str, Any]] | None:
        if not self.latents:
            return None  # the method's plain loader
        batch_size = cfg.device.batchsize_per_gpu
        return build_train_loader(context.train_dataset, cfg, device, batch_size=batch_size - batch_size // 2,
                                  seed=context.seed + context.index)

    def forward_student(self, method: ContinualMethod, context: TaskContext, model: torch.nn.Module,
                        batch: dict) -> tuple[StudentOutputs, dict] | None:
        stored = self._device_buffer
        if stored is None or not self.frozen_backbone.frozen:
            return None  # the method's plain forward
        height, width = self.input_hw(context.cfg)
        img = pad_to(batch["img"], height, width)
        with torch.no_grad():
            current = method.feature_backbone(model)(img)
        count = max(context.cfg.device.batchsize_per_gpu // 2, 1)
        index = torch.randint(len(stored["boxes"]), (count,), device=img.device)
        replayed = [dequantize(maps[index], scales[index]).to(f.dtype) for maps, scales, f
                    in zip(stored["maps"], stored["scales"], current)]
        features = tuple(torch.cat([c, r]) for c, r in zip(current, replayed))
        preds, towers = model.head.forward_with_towers(model.fpn(features))
        chosen = index.tolist()
        batch = with_ground_truth({**batch, "img": img},
                                  list(batch["gt_bboxes"]) + [stored["boxes"][i] for i in chosen],
                                  list(batch["gt_labels"]) + [stored["labels"][i] for i in chosen])
        return StudentOutputs(preds, towers, features), batch


def pad_to(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad a batch bottom/right to the full input size, so stored and current maps align."""
    return F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]))
