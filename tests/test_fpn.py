import pytest
import torch
import torch.nn.functional as F

from nanodet.model.fpn import FPNS, GhostPAN, build_fpn
from nanodet.model.module import ConvModule, DepthwiseConvModule

NANODET_PLUS_M_NECK = dict(
    name="GhostPAN",
    in_channels=[116, 232, 464],
    out_channels=96,
    kernel_size=5,
    num_extra_level=1,
    use_depthwise=True,
    activation="LeakyReLU",
)


def bn(prefix):
    return [f"{prefix}.{name}" for name in
            ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def ghost_blocks(prefix):
    """Keys of one GhostBlocks with use_res=True and one GhostBottleneck (stride 1, no SE,
    in != out so the shortcut is a depthwise-separable projection)."""
    block = f"{prefix}.blocks.0"
    return [
        f"{prefix}.reduce_conv.conv.weight",
        f"{prefix}.reduce_conv.conv.bias",
        f"{block}.ghost1.primary_conv.0.weight", *bn(f"{block}.ghost1.primary_conv.1"),
        f"{block}.ghost1.cheap_operation.0.weight", *bn(f"{block}.ghost1.cheap_operation.1"),
        f"{block}.ghost2.primary_conv.0.weight", *bn(f"{block}.ghost2.primary_conv.1"),
        f"{block}.ghost2.cheap_operation.0.weight", *bn(f"{block}.ghost2.cheap_operation.1"),
        f"{block}.shortcut.0.weight", *bn(f"{block}.shortcut.1"),
        f"{block}.shortcut.2.weight", *bn(f"{block}.shortcut.3"),
    ]


def depthwise_conv(prefix):
    return [f"{prefix}.depthwise.weight", f"{prefix}.pointwise.weight",
            *bn(f"{prefix}.dwnorm"), *bn(f"{prefix}.pwnorm")]


# The compatibility contract, derived from upstream NanoDet's ghost_pan.py / ghostnet.py /
# conv.py: attribute names and registration order of GhostPAN(in_channels=[8, 16],
# out_channels=8, use_depthwise=True, kernel_size=3, use_res=True, num_extra_level=1).
SMALL_GHOSTPAN_KEYS = [
    "reduce_layers.0.conv.weight", *bn("reduce_layers.0.bn"),
    "reduce_layers.1.conv.weight", *bn("reduce_layers.1.bn"),
    *ghost_blocks("top_down_blocks.0"),
    *depthwise_conv("downsamples.0"),
    *ghost_blocks("bottom_up_blocks.0"),
    *depthwise_conv("extra_lvl_in_conv.0"),
    *depthwise_conv("extra_lvl_out_conv.0"),
]


def nanodet_plus_m_neck():
    return build_fpn(NANODET_PLUS_M_NECK)


def test_ghostpan_nanodet_plus_m_gives_four_96_channel_levels_at_strides_8_to_64():
    neck = nanodet_plus_m_neck().eval()
    # Backbone features of a 320x320 image at strides 8, 16, 32.
    features = [torch.randn(2, c, 320 // s, 320 // s) for c, s in ((116, 8), (232, 16), (464, 32))]
    with torch.no_grad():
        outputs = neck(features)
    assert [tuple(o.shape) for o in outputs] == [
        (2, 96, 40, 40), (2, 96, 20, 20), (2, 96, 10, 10), (2, 96, 5, 5)
    ]


def test_ghostpan_nanodet_plus_m_parameter_count():
    # reduce 1x1 convs 78,528 + 4 GhostBlocks x 38,880 + 4 depthwise-separable k5 convs x 12,000
    assert sum(p.numel() for p in nanodet_plus_m_neck().parameters()) == 282_048


def test_ghostpan_nanodet_plus_m_key_shapes():
    state = nanodet_plus_m_neck().state_dict()
    assert state["reduce_layers.2.conv.weight"].shape == (96, 464, 1, 1)
    assert state["top_down_blocks.0.blocks.0.ghost1.primary_conv.0.weight"].shape == (48, 192, 1, 1)
    assert state["top_down_blocks.0.blocks.0.ghost1.cheap_operation.0.weight"].shape == (48, 1, 3, 3)
    assert state["bottom_up_blocks.1.blocks.0.shortcut.0.weight"].shape == (192, 1, 5, 5)
    assert state["downsamples.1.depthwise.weight"].shape == (96, 1, 5, 5)
    assert state["extra_lvl_out_conv.0.pointwise.weight"].shape == (96, 96, 1, 1)
    assert not any("reduce_conv" in key for key in state)  # use_res is off in NanoDet-Plus-m


def test_ghostpan_state_dict_keys_match_upstream_contract():
    neck = GhostPAN([8, 16], 8, use_depthwise=True, kernel_size=3, use_res=True, num_extra_level=1)
    assert list(neck.state_dict()) == SMALL_GHOSTPAN_KEYS


def test_ghostpan_extra_level_adds_strided_convs_of_top_input_and_last_output():
    neck = GhostPAN([8, 16], 8, kernel_size=3, num_extra_level=1).eval()
    features = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8)]
    with torch.no_grad():
        outputs = neck(features)
        reduced_top = neck.reduce_layers[1](features[1])
        expected = neck.extra_lvl_in_conv[0](reduced_top) + neck.extra_lvl_out_conv[0](outputs[1])
    assert torch.allclose(outputs[2], expected)


def test_depthwise_conv_module_computes_dw_bn_act_pw_bn_act():
    module = DepthwiseConvModule(4, 6, 3, padding=1, activation="LeakyReLU").eval()
    for norm in (module.dwnorm, module.pwnorm):
        norm.running_mean.uniform_(-1, 1)
        norm.weight.data.uniform_(0.5, 2)
    x = torch.randn(1, 4, 5, 5)

    def bn(t, norm):
        return F.batch_norm(t, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=1e-5)

    y = F.leaky_relu(bn(F.conv2d(x, module.depthwise.weight, padding=1, groups=4), module.dwnorm), 0.1)
    y = F.leaky_relu(bn(F.conv2d(y, module.pointwise.weight), module.pwnorm), 0.1)
    with torch.no_grad():
        assert torch.allclose(module(x), y, atol=1e-6)
    assert module.depthwise.bias is None  # bias="auto" with a norm layer


def test_conv_module_names_norm_by_type_and_adds_bias_without_norm():
    with_gn = ConvModule(4, 8, 1, norm_cfg=dict(type="GN", num_groups=2))
    assert [k for k in with_gn.state_dict()] == ["conv.weight", "gn.weight", "gn.bias"]
    plain = ConvModule(4, 8, 1)
    assert plain.conv.bias is not None and plain.norm is None


def test_build_fpn_rejects_unknown_name():
    with pytest.raises(ValueError, match="GhostPAN"):
        build_fpn({"name": "PAN", "in_channels": [8], "out_channels": 8})
    assert FPNS == {"GhostPAN": GhostPAN}
