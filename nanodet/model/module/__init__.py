"""Building blocks shared by backbones, necks and heads."""

from .activation import ACTIVATIONS, act_layers
from .conv import ConvModule, DepthwiseConvModule
from .init_weights import constant_init, kaiming_init, normal_init, xavier_init
from .norm import NORM_LAYERS, build_norm_layer
from .scale import Scale

__all__ = [
    "ACTIVATIONS",
    "act_layers",
    "ConvModule",
    "DepthwiseConvModule",
    "constant_init",
    "kaiming_init",
    "normal_init",
    "xavier_init",
    "NORM_LAYERS",
    "build_norm_layer",
    "Scale",
]
