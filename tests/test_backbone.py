import logging
import os

import pytest

from nanodet.util.cli import run_main
import torch
import torch.nn as nn
import torchvision

from nanodet.model.backbone import BACKBONES, MobileNetV2, ShuffleNetV2, build_backbone
from nanodet.model.backbone.mobilenetv2 import torchvision_to_nanodet_key
from nanodet.model.backbone.pretrained import hub_checkpoint_dir

SHUFFLENET_CHANNELS = {
    "0.5x": (48, 96, 192),
    "1.0x": (116, 232, 464),
    "1.5x": (176, 352, 704),
    "2.0x": (244, 488, 976),
}


def shufflenet(**kwargs):
    kwargs.setdefault("pretrain", False)
    return ShuffleNetV2(**kwargs)


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def torchvision_backbone_state(model):
    """torchvision's state dict without the parts NanoDet's backbones leave out."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("conv5.", "fc."))}


@pytest.mark.parametrize("model_size", list(SHUFFLENET_CHANNELS))
def test_shufflenetv2_outputs_stage_channels_at_strides_8_16_32(model_size):
    model = shufflenet(model_size=model_size).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outputs] == list(SHUFFLENET_CHANNELS[model_size])
    assert [tuple(o.shape[2:]) for o in outputs] == [(8, 12), (4, 6), (2, 3)]


def test_shufflenetv2_returns_only_requested_stages_and_optional_last_conv():
    model = shufflenet(model_size="1.0x", out_stages=(3, 4), with_last_conv=True).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outputs] == [232, 1024]
    assert "stage4.conv5.0.weight" in model.state_dict()


def test_shufflenetv2_rejects_unknown_size_and_stage():
    with pytest.raises(ValueError, match="model_size"):
        shufflenet(model_size="3.0x")
    with pytest.raises(ValueError, match="out_stages"):
        shufflenet(out_stages=(1, 2))


def test_shufflenetv2_1x_parameter_count_is_torchvision_minus_conv5_and_fc():
    model = shufflenet(model_size="1.0x", out_stages=(2, 3, 4), activation="LeakyReLU")
    reference = torchvision.models.shufflenet_v2_x1_0(weights=None)
    expected = sum(v.numel() for k, v in reference.named_parameters()
                   if not k.startswith(("conv5.", "fc.")))
    assert param_count(model) == expected == 776_420


def test_shufflenetv2_1x_state_dict_matches_torchvision_keys_and_shapes():
    ours = shufflenet(model_size="1.0x").state_dict()
    theirs = torchvision_backbone_state(torchvision.models.shufflenet_v2_x1_0(weights=None))
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_shufflenetv2_random_init_follows_upstream_scheme():
    model = shufflenet(model_size="0.5x", activation="LeakyReLU")
    bn = model.conv1[1]
    assert torch.all(bn.weight == 1) and torch.allclose(bn.bias, torch.full_like(bn.bias, 1e-4))
    assert model.conv1[2].negative_slope == 0.1


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_mobilenetv2_outputs_default_stages_at_strides_4_8_16_32(width):
    model = MobileNetV2(width_mult=width).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    expected_channels = [int(24 * width), int(32 * width), int(96 * width), 1280]
    assert [o.shape[1] for o in outputs] == expected_channels
    assert [o.shape[2] for o in outputs] == [16, 8, 4, 2]


def test_mobilenetv2_parameter_count_is_torchvision_minus_classifier():
    reference = torchvision.models.mobilenet_v2(weights=None)
    expected = sum(v.numel() for k, v in reference.named_parameters() if not k.startswith("classifier."))
    assert param_count(MobileNetV2()) == expected == 2_223_872


def test_mobilenetv2_torchvision_key_mapping_covers_every_weight_in_order():
    ours = MobileNetV2().state_dict()
    theirs = torchvision.models.mobilenet_v2(weights=None).state_dict()
    mapped = {torchvision_to_nanodet_key(k): v for k, v in theirs.items()}
    mapped.pop(None)  # the classifier
    assert list(mapped) == list(ours)
    assert all(ours[k].shape == mapped[k].shape for k in ours)
    assert torchvision_to_nanodet_key("features.0.0.weight") == "first_layer.0.weight"
    assert torchvision_to_nanodet_key("features.18.1.bias") == "stage6.1.1.bias"


def test_pretrain_path_loads_torchvision_file(tmp_path):
    reference = torchvision.models.shufflenet_v2_x1_0(weights=None)
    path = tmp_path / "shufflenet.pth"
    torch.save(reference.state_dict(), path)
    model = shufflenet(model_size="1.0x", pretrain=str(path))
    ours = model.state_dict()
    for key, value in torchvision_backbone_state(reference).items():
        assert torch.equal(ours[key], value), key


def test_pretrain_path_maps_torchvision_conv5_into_stage4(tmp_path):
    reference = torchvision.models.shufflenet_v2_x0_5(weights=None)
    path = tmp_path / "shufflenet.pth"
    torch.save(reference.state_dict(), path)
    model = shufflenet(model_size="0.5x", with_last_conv=True, pretrain=path)
    assert torch.equal(model.stage4.conv5[0].weight, reference.conv5[0].weight)


def test_pretrain_path_accepts_wrapped_state_dict_for_mobilenetv2(tmp_path):
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet.pth"
    torch.save({"model": reference.state_dict()}, path)
    model = MobileNetV2(pretrain=path)
    assert torch.equal(model.first_layer[0].weight, reference.features[0][0].weight)
    assert torch.equal(model.stage3[2].conv[1][0].weight, reference.features[9].conv[1][0].weight)
    assert torch.equal(model.stage6[1][1].running_var, reference.features[18][1].running_var)


def test_pretrain_partial_file_logs_missing_backbone_keys(tmp_path, caplog):
    state = torchvision.models.shufflenet_v2_x1_0(weights=None).state_dict()
    del state["stage2.0.branch1.0.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING):
        shufflenet(model_size="1.0x", pretrain=path)
    assert "stage2.0.branch1.0.weight" in caplog.text


def test_pretrain_file_with_no_matching_key_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(RuntimeError, match="none of the 2 entries"):
        shufflenet(model_size="1.0x", pretrain=path)


def test_pretrain_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        shufflenet(model_size="1.0x", pretrain=str(missing))


def no_network(monkeypatch):
    def refuse(url, **kwargs):
        raise AssertionError(f"the network was asked for {url}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_pretrain_true_reads_torchvisions_file_from_the_hub_cache_without_the_network(monkeypatch, tmp_path):
    no_network(monkeypatch)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    reference = torchvision.models.shufflenet_v2_x1_0(weights=None)
    url = torchvision.models.ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / os.path.basename(url))
    model = ShuffleNetV2(model_size="1.0x", pretrain=True)
    assert torch.equal(model.conv1[0].weight, reference.conv1[0].weight)


def test_pretrain_true_without_the_file_says_what_to_put_where_and_downloads_nothing(monkeypatch, tmp_path):
    no_network(monkeypatch)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(SystemExit) as error:  # one line from a command, not a traceback
        run_main(lambda argv: ShuffleNetV2(model_size="1.0x", pretrain=True), [])
    message = str(error.value)
    assert message.startswith("error: ShuffleNetV2: pretrain: true needs torchvision's ImageNet weights")
    assert "shufflenetv2_x1-5666bf0f80.pth" in message and "nothing is downloaded" in message
    assert hub_checkpoint_dir() in message and "path of a weights file" in message


def test_mobilenetv2_pretrain_true_for_unpublished_width_says_so():
    with pytest.raises(ValueError, match="width_mult 1.0 only"):
        MobileNetV2(width_mult=0.5, pretrain=True)


def test_build_backbone_passes_config_keys_and_rejects_unknown_name():
    cfg = {"name": "ShuffleNetV2", "model_size": "0.5x", "out_stages": [4], "pretrain": False}
    model = build_backbone(cfg)
    assert isinstance(model, ShuffleNetV2) and model.out_stages == [4]
    assert cfg["name"] == "ShuffleNetV2"  # the caller's config is left intact
    with pytest.raises(ValueError, match="MobileNetV2"):
        build_backbone({"name": "ResNet"})
    assert set(BACKBONES) == {"ShuffleNetV2", "MobileNetV2"}


def _output_of(module, submodule, x):
    captured = []
    handle = submodule.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        module(x)
    handle.remove()
    return captured[0]


def test_shufflenetv2_computes_the_same_features_as_torchvision_with_its_weights():
    reference = torchvision.models.shufflenet_v2_x0_5(weights=None).eval()
    model = shufflenet(model_size="0.5x", out_stages=(2, 4))
    model.load_state_dict(torchvision_backbone_state(reference))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stage2, stage4 = model(x)
    assert torch.equal(stage2, _output_of(reference, reference.stage2, x))
    assert torch.equal(stage4, _output_of(reference, reference.stage4, x))


def test_mobilenetv2_computes_the_same_features_as_torchvision_with_its_weights():
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    model = MobileNetV2(activation="ReLU6", out_stages=(2, 6))  # torchvision uses ReLU6
    mapped = {torchvision_to_nanodet_key(k): v for k, v in reference.state_dict().items()}
    mapped.pop(None)
    model.load_state_dict(mapped)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stage2, stage6 = model(x)
    assert torch.equal(stage2, _output_of(reference, reference.features[6], x))
    assert torch.equal(stage6, _output_of(reference, reference.features[18], x))


def test_channel_shuffle_keeps_a_channels_last_tensor_channels_last_with_the_same_values():
    from nanodet.model.backbone.shufflenetv2 import channel_shuffle

    x = torch.randn(2, 8, 3, 5)
    expected = channel_shuffle(x, 2)
    assert torch.equal(expected[:, 1], x[:, 4]) and torch.equal(expected[:, 2], x[:, 1])  # (0 4 1 5 2 6 3 7)
    shuffled = channel_shuffle(x.contiguous(memory_format=torch.channels_last), 2)
    assert torch.equal(shuffled, expected)
    assert shuffled.is_contiguous(memory_format=torch.channels_last) and not shuffled.is_contiguous()


def test_a_channels_last_shufflenet_gives_the_nchw_outputs_and_keeps_its_layout():
    torch.manual_seed(0)
    model = shufflenet(model_size="0.5x").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        outputs = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert got.is_contiguous(memory_format=torch.channels_last)
