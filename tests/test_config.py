"""Config loading: upstream keys and defaults, strict keys with suggestions, --set overrides."""

import copy
from pathlib import Path

import pytest
import yaml

from nanodet.util import CfgNode, ConfigError, cfg as global_cfg, load_config, read_config
from nanodet.util.config import parse_override

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["cfg/nanodet-plus-m_320.yml", "cfg/VOC.yml", "cfg/COCO.yml"]


def write_variant(tmp_path, edit, base="cfg/VOC.yml"):
    data = yaml.safe_load((ROOT / base).read_text())
    edit(data)
    path = tmp_path / "variant.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_with_attribute_access(name):
    cfg = read_config(ROOT / name)
    assert cfg.model.arch.head.num_classes == len(cfg.class_names)
    assert cfg.log.interval == 50  # a default from upstream, filled in
    assert cfg.schedule.optimizer.name == "AdamW"
    assert cfg.config_path.endswith(name.split("/")[-1])


def test_voc_config_has_paper_settings():
    cfg = read_config(ROOT / "cfg/VOC.yml")
    assert cfg.class_names[:3] == ["aeroplane", "bicycle", "bird"] and len(cfg.class_names) == 20
    assert cfg.class_names[15:] == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    pipe = cfg.data.train.pipeline
    assert pipe.scale == [0.6, 1.4] and pipe.translate == 0.2 and pipe.flip == 0.5
    assert pipe.contrast == [0.8, 1.2] and pipe.saturation == [0.8, 1.2]
    assert cfg.schedule.lr_schedule.eta_min == 5e-5 and cfg.grad_clip == 35
    assert cfg.device.batchsize_per_gpu == 64 and cfg.schedule.total_epochs == 100
    assert "aux_head" not in cfg.model.arch and not cfg.model.weight_averager


def test_misspelled_plain_key_names_path_and_nearest(tmp_path):
    path = write_variant(tmp_path, lambda d: d["schedule"].update(epochs=5))
    with pytest.raises(ConfigError) as err:
        read_config(path)
    message = str(err.value)
    assert "schedule.epochs" in message and "total_epochs" in message and str(path) in message


def test_unknown_component_argument_is_checked_against_the_class(tmp_path):
    path = write_variant(tmp_path, lambda d: d["model"]["arch"]["backbone"].update(model_sise="1.0x"))
    with pytest.raises(ConfigError, match=r"model\.arch\.backbone\.model_sise.*model_size"):
        read_config(path)


def test_unknown_component_name_suggests_the_registered_one(tmp_path):
    path = write_variant(tmp_path, lambda d: d["model"]["arch"]["backbone"].update(name="ShuffleNetV3"))
    with pytest.raises(ConfigError, match="ShuffleNetV2"):
        read_config(path)


def test_pipeline_keys_are_checked(tmp_path):
    path = write_variant(tmp_path, lambda d: d["data"]["train"]["pipeline"].update(fliip=0.5))
    with pytest.raises(ConfigError, match=r"data\.train\.pipeline\.fliip.*flip"):
        read_config(path)


def test_optimizer_arguments_are_checked_against_torch(tmp_path):
    path = write_variant(tmp_path, lambda d: d["schedule"]["optimizer"].update(weight_decat=0.1))
    with pytest.raises(ConfigError, match="weight_decay"):
        read_config(path)


def test_num_classes_must_match_class_names(tmp_path):
    path = write_variant(tmp_path, lambda d: d["model"]["arch"]["head"].update(num_classes=21))
    with pytest.raises(ConfigError, match="num_classes is 21 but class_names has 20"):
        read_config(path)


def test_overrides_are_dotted_and_yaml_typed():
    cfg = read_config(ROOT / "cfg/VOC.yml", [
        "schedule.total_epochs=3", "device.gpu_ids=-1", "data.train.input_size=[160, 160]",
        "data.train.keep_ratio=false", "save_dir=/tmp/x y",
    ])
    assert cfg.schedule.total_epochs == 3 and cfg.device.gpu_ids == -1
    assert cfg.data.train.input_size == [160, 160] and cfg.data.train.keep_ratio is False
    assert cfg.save_dir == "/tmp/x y"


def test_override_of_unknown_key_fails_and_says_so():
    with pytest.raises(ConfigError, match=r"--set schedule\.epochs=3.*total_epochs"):
        read_config(ROOT / "cfg/VOC.yml", ["schedule.epochs=3"])


@pytest.mark.parametrize("text", ["no_equals_sign", "=3", "a.b=[1, 2"])
def test_malformed_override_is_rejected(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yml"):
        read_config(path)


def test_missing_file_is_reported():
    with pytest.raises(ConfigError, match="not found"):
        read_config("does/not/exist.yml")


def test_load_config_fills_upstream_global_in_place():
    target = CfgNode()
    load_config(target, ROOT / "cfg/VOC.yml")
    assert target.model.arch.backbone.name == "ShuffleNetV2"
    assert isinstance(global_cfg, CfgNode) and "schedule" in global_cfg


def test_nodes_deepcopy_and_convert_back_to_plain_dicts():
    cfg = read_config(ROOT / "cfg/VOC.yml")
    clone = copy.deepcopy(cfg)
    clone.model.arch.head.num_classes = 3
    assert cfg.model.arch.head.num_classes == 20
    plain = cfg.to_dict()
    assert type(plain["model"]["arch"]) is dict
    with pytest.raises(AttributeError):
        cfg.no_such_section


@pytest.mark.parametrize("override, message", [
    ("log.interval=0", r"log\.interval must be a number of steps >= 1, got 0"),
    ("log.interval=ten", r"log\.interval must be a number of steps >= 1, got 'ten'"),
    ("schedule.checkpoint_interval=-1", r"schedule\.checkpoint_interval must be a number of seconds >= 0, got -1"),
    ("device.compile=fast", r"device\.compile: expected false, true or one of .*got 'fast'"),
    ("device.gpu_augment=sometimes", r"device\.gpu_augment must be true, false or always, got 'sometimes'"),
    ("device.channels_last=nhwc", r"device\.channels_last must be true, false or always, got 'nhwc'"),
    ("device.cuda_graph=2", r"device\.cuda_graph must be true, false or always, got 2"),
    ("device.cudnn_benchmark=maybe", r"device\.cudnn_benchmark must be true or false, got 'maybe'"),
    ("device.compile_dynamic=2", r"device\.compile_dynamic must be true or false, got 2"),
    ("device.precision=fp8", r"device\.precision must be auto, 32, 16 or bf16, got 'fp8'"),
])
def test_bad_log_interval_and_compile_mode_name_the_file_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        read_config(ROOT / "cfg/demo.yml", [override])
    assert "demo.yml" in str(err.value)


def test_compile_values_load_as_the_mode_they_mean():
    from nanodet.trainer.compile import compile_mode

    meaning = {"false": None, "true": "default", "reduce-overhead": "reduce-overhead"}
    for value, mode in meaning.items():
        assert compile_mode(read_config(ROOT / "cfg/demo.yml", [f"device.compile={value}"]).device.compile) == mode


@pytest.mark.parametrize("key, value, message", [
    ("schedule.total_epochs", "ten", "schedule.total_epochs must be a number of epochs >= 1, got 'ten'"),
    ("device.batchsize_per_gpu", -4, "device.batchsize_per_gpu must be a number of images >= 1, got -4"),
    ("device.workers_per_gpu", 1.5, "device.workers_per_gpu must be a number of processes >= 0, got 1.5"),
    ("device.host_threads", -1, "device.host_threads must be a number of threads .0: PyTorch's default. >= 0"),
    ("schedule.warmup.steps", True, "schedule.warmup.steps must be a number of steps >= 0, got True"),
    ("grad_clip", -1, "grad_clip must be a gradient norm"),
])
def test_known_numbers_are_checked_at_load_naming_file_key_and_value(key, value, message):
    with pytest.raises(ConfigError, match=f"demo.yml.*: {message}"):
        read_config(ROOT / "cfg/demo.yml", [f"{key}={value}"])


def test_no_gradient_clipping_is_a_null_grad_clip():
    assert read_config(ROOT / "cfg/demo.yml", ["grad_clip=null"]).grad_clip is None


def test_an_empty_config_says_what_it_lacks(tmp_path):
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty.yml: no 'model.arch' section"):
        read_config(empty)


@pytest.mark.parametrize("name", ["synthetic.yml", "synthetic_dense.yml", "VOC.yml", "COCO.yml", "demo.yml"])
def test_the_fast_path_is_the_default_on_a_gpu_and_the_reference_path_on_a_cpu(name, monkeypatch):
    # The fast path matched the reference path on a GPU (docs/results/parity_joint10_h200.json):
    # a shipped config trains with it on a CUDA device, and on a CPU exactly as before.
    from nanodet.trainer.builders import on_this_device, resolve_precision

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: True)
    device = read_config(ROOT / "cfg" / name).device
    assert resolve_precision(device.precision, "gpu") == "bf16-mixed"
    assert resolve_precision(device.precision, "cpu") == "32-true"
    for switch in ("gpu_augment", "channels_last", "cuda_graph"):
        assert on_this_device(device[switch], "cuda:0"), switch
        assert not on_this_device(device[switch], "cpu"), switch
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: False)  # e.g. a V100
    assert resolve_precision(device.precision, "gpu") == "32-true"
    # Each switch can still be turned off, or forced onto a CPU for checks.
    assert not on_this_device(False, "cuda") and on_this_device("always", "cpu")
    assert resolve_precision(32, "gpu") == "32-true"

