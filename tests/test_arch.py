"""NanoDet-Plus-m as a whole: the state-dict contract with upstream checkpoints, parameter
counts, training steps, the auxiliary head and inference output."""

import copy
import math

import numpy as np
import pytest
import torch

from nanodet.model.arch import ARCHS, NanoDetPlus, OneStageDetector, build_model
from nanodet.util import CfgNode
from fixtures_model import head_cfg

STRIDES = [8, 16, 32, 64]


def model_cfg(num_classes=80, aux=False, arch="NanoDetPlus"):
    """The ``model`` node of upstream's nanodet-plus-m_320 config (no ImageNet download)."""
    node = dict(
        name=arch,
        backbone=dict(name="ShuffleNetV2", model_size="1.0x", out_stages=[2, 3, 4],
                      activation="LeakyReLU", pretrain=False),
        fpn=dict(name="GhostPAN", in_channels=[116, 232, 464], out_channels=96, kernel_size=5,
                 num_extra_level=1, use_depthwise=True, activation="LeakyReLU"),
        head=head_cfg(num_classes),
    )
    if arch == "NanoDetPlus":
        node["detach_epoch"] = 10
    if aux:
        node["aux_head"] = dict(name="SimpleConvHead", num_classes=num_classes, input_channel=192,
                                feat_channels=192, stacked_convs=4, strides=STRIDES,
                                activation="LeakyReLU", reg_max=7)
    return CfgNode({"arch": node, "weight_averager": {"name": "ExpMovingAverager", "decay": 0.9998}})


# ----------------------------------------------------------- expected keys, from upstream's code
def conv(name, out_ch, in_per_group, k, bias=False):
    yield name + ".weight", (out_ch, in_per_group, k, k)
    if bias:
        yield name + ".bias", (out_ch,)


def bn(name, ch):
    for key in ("weight", "bias", "running_mean", "running_var"):
        yield f"{name}.{key}", (ch,)
    yield name + ".num_batches_tracked", ()


def depthwise_module(name, in_ch, out_ch, k):
    """DepthwiseConvModule with BN: depthwise, dwnorm, pointwise, pwnorm (no conv bias)."""
    yield from conv(name + ".depthwise", in_ch, 1, k)
    yield from conv(name + ".pointwise", out_ch, in_ch, 1)
    yield from bn(name + ".dwnorm", in_ch)
    yield from bn(name + ".pwnorm", out_ch)


def shufflenet_v2_1x(prefix):
    yield from conv(prefix + "conv1.0", 24, 3, 3)
    yield from bn(prefix + "conv1.1", 24)
    in_ch = 24
    for stage, out_ch, repeats in ((2, 116, 4), (3, 232, 8), (4, 464, 4)):
        half = out_ch // 2
        for i in range(repeats):
            block = f"{prefix}stage{stage}.{i}"
            if i == 0:  # stride 2: both branches see the whole input
                yield from conv(block + ".branch1.0", in_ch, 1, 3)
                yield from bn(block + ".branch1.1", in_ch)
                yield from conv(block + ".branch1.2", half, in_ch, 1)
                yield from bn(block + ".branch1.3", half)
            yield from conv(block + ".branch2.0", half, in_ch if i == 0 else half, 1)
            yield from bn(block + ".branch2.1", half)
            yield from conv(block + ".branch2.3", half, 1, 3)
            yield from bn(block + ".branch2.4", half)
            yield from conv(block + ".branch2.5", half, half, 1)
            yield from bn(block + ".branch2.6", half)
        in_ch = out_ch


def ghost_module(name, in_ch, out_ch):
    init = math.ceil(out_ch / 2)
    yield from conv(name + ".primary_conv.0", init, in_ch, 1)
    yield from bn(name + ".primary_conv.1", init)
    yield from conv(name + ".cheap_operation.0", init, 1, 3)
    yield from bn(name + ".cheap_operation.1", init)


def ghost_blocks(name, in_ch, out_ch, k):
    """GhostBlocks with one GhostBottleneck (expand 1, no SE, stride 1, in != out)."""
    block = name + ".blocks.0"
    yield from ghost_module(block + ".ghost1", in_ch, out_ch)
    yield from ghost_module(block + ".ghost2", out_ch, out_ch)
    yield from conv(block + ".shortcut.0", in_ch, 1, k)
    yield from bn(block + ".shortcut.1", in_ch)
    yield from conv(block + ".shortcut.2", out_ch, in_ch, 1)
    yield from bn(block + ".shortcut.3", out_ch)


def ghost_pan(prefix, in_channels=(116, 232, 464), out_ch=96, k=5):
    for i, in_ch in enumerate(in_channels):
        yield from conv(f"{prefix}reduce_layers.{i}.conv", out_ch, in_ch, 1)
        yield from bn(f"{prefix}reduce_layers.{i}.bn", out_ch)
    for i in range(len(in_channels) - 1):
        yield from ghost_blocks(f"{prefix}top_down_blocks.{i}", 2 * out_ch, out_ch, k)
        yield from depthwise_module(f"{prefix}downsamples.{i}", out_ch, out_ch, k)
        yield from ghost_blocks(f"{prefix}bottom_up_blocks.{i}", 2 * out_ch, out_ch, k)
    yield from depthwise_module(prefix + "extra_lvl_in_conv.0", out_ch, out_ch, k)
    yield from depthwise_module(prefix + "extra_lvl_out_conv.0", out_ch, out_ch, k)


def nanodet_plus_head(prefix, num_classes):
    yield prefix + "distribution_project.project", (8,)
    for level in range(4):
        for i in range(2):
            yield from depthwise_module(f"{prefix}cls_convs.{level}.{i}", 96, 96, 5)
        yield from conv(f"{prefix}gfl_cls.{level}", num_classes + 32, 96, 1, bias=True)


def simple_conv_head(prefix, num_classes):
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            yield from conv(f"{prefix}{tower}.{i}.conv", 192, 192, 3)
            yield f"{prefix}{tower}.{i}.gn.weight", (192,)
            yield f"{prefix}{tower}.{i}.gn.bias", (192,)
    yield from conv(prefix + "gfl_cls", num_classes, 192, 3, bias=True)
    yield from conv(prefix + "gfl_reg", 32, 192, 3, bias=True)
    for level in range(4):
        yield f"{prefix}scales.{level}.scale", ()


def expected_state_dict(num_classes, aux):
    keys = [*shufflenet_v2_1x("backbone."), *ghost_pan("fpn."), *nanodet_plus_head("head.", num_classes)]
    if aux:
        keys += [*ghost_pan("aux_fpn."), *simple_conv_head("aux_head.", num_classes)]
    return dict(keys)


def is_buffer(key):
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked", "project")


# ------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("num_classes,aux", [(80, False), (20, False), (80, True)])
def test_state_dict_keys_and_shapes_are_upstreams(num_classes, aux):
    model = build_model(model_cfg(num_classes, aux=aux))
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_state_dict(num_classes, aux)
    assert sorted(set(expected) - set(actual)) == []  # missing keys
    assert sorted(set(actual) - set(expected)) == []  # unexpected keys
    assert actual == expected
    # The counting in this file and the model agree parameter by parameter.
    assert sum(p.numel() for p in model.parameters()) == sum(
        math.prod(shape) for key, shape in expected.items() if not is_buffer(key))


def test_parameter_counts():
    # NanoDet-Plus-m 320 without the auxiliary head (as deployed, and as the continual-learning
    # configs train it): ShuffleNetV2 1.0x 776,420 + GhostPAN 282,048 + head.
    counts = {n: sum(p.numel() for p in build_model(model_cfg(n)).parameters()) for n in (80, 20)}
    assert counts == {80: 1_197_924, 20: 1_174_644}
    # The head's only class-dependent part is gfl_cls: 4 levels x (96 + 1) per extra class.
    assert counts[80] - counts[20] == 60 * 4 * 97


def test_checkpoint_round_trip_strict_and_same_predictions():
    torch.manual_seed(0)
    source = build_model(model_cfg(20)).eval()
    torch.manual_seed(1)
    target = build_model(model_cfg(20)).eval()
    target.load_state_dict(copy.deepcopy(source.state_dict()), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def synthetic_batch(size=128):
    """One image, twice: a bright rectangle (class 1) and a dark one (class 0)."""
    img = torch.zeros(2, 3, size, size)
    img[:, :, 20:70, 30:100] = 2.0
    img[:, :, 80:120, 10:50] = -2.0
    boxes = np.array([[30, 20, 100, 70], [10, 80, 50, 120]], np.float32)
    labels = np.array([1, 0])
    warp = np.eye(3)
    return {
        "img": img,
        "gt_bboxes": [boxes, boxes.copy()],
        "gt_labels": [labels, labels.copy()],
        "warp_matrix": [warp, warp],
        "img_info": {"height": torch.tensor([size, size]), "width": torch.tensor([size, size]),
                     "id": torch.tensor([0, 1]), "file_name": ["a.png", "b.png"]},
    }


@pytest.mark.parametrize("aux", [False, True])
def test_a_few_steps_lower_the_loss(aux):
    torch.manual_seed(0)
    model = build_model(model_cfg(num_classes=3, aux=aux)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    meta = synthetic_batch()
    losses = []
    for _ in range(20):
        _, loss, states = model.forward_train(meta)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert ("aux_loss_qfl" in states) == aux
    # The loss first rises while the assigner finds more positives, then falls well below
    # its start.
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def test_aux_branch_stops_training_the_backbone_from_detach_epoch():
    torch.manual_seed(0)
    model = build_model(model_cfg(num_classes=3, aux=True))
    meta = synthetic_batch(64)
    for epoch, reaches_backbone in ((0, True), (10, False)):
        model.zero_grad()
        model.set_epoch(epoch)
        _, _, states = model.forward_train(meta)
        states["aux_loss_qfl"].backward()  # the aux head's own term only
        grad = model.backbone.conv1[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches_backbone
        assert model.aux_fpn.reduce_layers[0].conv.weight.grad is not None


def test_without_aux_head_nanodet_plus_is_a_one_stage_detector():
    torch.manual_seed(0)
    plus = build_model(model_cfg(num_classes=3))
    torch.manual_seed(0)
    plain = build_model(model_cfg(num_classes=3, arch="OneStageDetector"))
    assert isinstance(plain, OneStageDetector) and not isinstance(plain, NanoDetPlus)
    assert plus.aux_head is None and plus.aux_fpn is None
    plain.load_state_dict(plus.state_dict(), strict=True)
    meta = synthetic_batch(64)
    assert plus.forward_train(meta)[1].item() == pytest.approx(plain.forward_train(meta)[1].item())


def test_inference_returns_detections_per_image_and_class():
    torch.manual_seed(0)
    model = build_model(model_cfg(num_classes=3)).eval()
    with torch.no_grad():  # make class 2 fire everywhere so NMS and the cap have work to do
        for conv in model.head.gfl_cls:
            conv.bias[2] = 3.0
    meta = synthetic_batch(128)
    results = model.inference(meta)
    assert set(results) == {0, 1}
    for per_class in results.values():
        assert set(per_class) == {0, 1, 2}
        assert per_class[0] == [] and per_class[1] == []
        assert 0 < len(per_class[2]) <= 100
        dets = np.array(per_class[2])
        assert dets.shape[1] == 5
        assert np.all(dets[:, :4] >= 0) and np.all(dets[:, :4] <= 128)
        assert np.all(dets[:, 4] > 0.05) and np.all(np.diff(dets[:, 4]) <= 0)


def test_build_model_reports_unknown_architectures():
    assert set(ARCHS) == {"NanoDetPlus", "OneStageDetector"}
    bad = model_cfg()
    bad.arch.name = "YOLO"
    with pytest.raises(ValueError, match="NanoDetPlus"):
        build_model(bad)
