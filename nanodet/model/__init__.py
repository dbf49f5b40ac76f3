"""Detectors and their parts; importing the package registers their classes with the config
checker (``nanodet.util.config.register_components``)."""

from ..util.config import register_components
from .arch import ARCHS
from .backbone import BACKBONES
from .fpn import FPNS
from .head import HEADS
from .weight_averager import WEIGHT_AVERAGERS

register_components({"model.arch": ARCHS, "model.arch.backbone": BACKBONES, "model.arch.fpn": FPNS,
                     "model.arch.head": HEADS, "model.arch.aux_head": HEADS,
                     "model.weight_averager": WEIGHT_AVERAGERS})
