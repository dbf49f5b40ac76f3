"""Files a user hands over never run code: every checkpoint and buffer is read without it."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from nanodet.continual import build_method
from nanodet.continual.methods.buffer import ImageReplay
from nanodet.util import CheckpointError, read_checkpoint
from nanodet.util.check_point import safe_load


class Touch:
    """Pickles as a call that creates ``path`` when the file is loaded with code execution."""

    def __init__(self, path):
        self.path = Path(path)

    def __reduce__(self):
        return (Path.touch, (self.path,))


def malicious(tmp_path, name="model.pth"):
    path = tmp_path / name
    torch.save({"state_dict": {"head.weight": torch.ones(2)}, "note": Touch(tmp_path / "code_ran")}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_by_name_and_runs_nothing(tmp_path):
    path = malicious(tmp_path)
    with pytest.raises(CheckpointError, match=f"{path}: refused: this checkpoint holds Python objects"):
        read_checkpoint(path)
    assert not (tmp_path / "code_ran").exists()


def test_a_latent_buffer_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageReplay, "load_state", lambda self, task_dir: None)  # the buffer's records: not the point
    malicious(tmp_path, "latent_buffer.pt")
    with pytest.raises(CheckpointError, match="latent_buffer.pt: refused: this latent buffer holds"):
        build_method("latent_replay").load_state(tmp_path)
    assert not (tmp_path / "code_ran").exists()


def test_numeric_numpy_arrays_load_as_earlier_latent_buffers_hold_them(tmp_path):
    path = tmp_path / "buffer.pt"
    torch.save({"boxes": np.arange(8, dtype=np.float32).reshape(2, 4), "labels": np.array([3, 1]),
                "maps": [torch.ones(2, 2, dtype=torch.float16)]}, path)
    loaded = safe_load(path)
    np.testing.assert_array_equal(loaded["boxes"], np.arange(8, dtype=np.float32).reshape(2, 4))
    assert loaded["labels"].tolist() == [3, 1] and loaded["maps"][0].dtype == torch.float16


def test_an_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"boxes": np.array([Touch(tmp_path / "code_ran")], dtype=object)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        safe_load(path)
    assert not (tmp_path / "code_ran").exists()


def test_a_checkpoint_carrying_upstreams_config_node_reads_it_as_a_mapping(tmp_path, monkeypatch):
    """Upstream NanoDet's config class (a dict subclass) is not importable here; its checkpoint's
    config comes back as plain mappings and the weights load."""
    module = types.ModuleType("nanodet.util.yacs")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "nanodet.util.yacs", "CfgNode"
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "nanodet.util.yacs", module)
    cfg = CfgNode(model=CfgNode(arch=CfgNode(name="NanoDetPlus")))
    cfg.__dict__["__immutable__"] = True
    path = tmp_path / "upstream.ckpt"
    torch.save({"state_dict": {"model.head.weight": torch.ones(2)}, "cfg": cfg}, path)
    monkeypatch.delitem(sys.modules, "nanodet.util.yacs")
    checkpoint = read_checkpoint(path)
    assert checkpoint["cfg"]["model"]["arch"]["name"] == "NanoDetPlus"
    assert torch.equal(checkpoint["state_dict"]["model.head.weight"], torch.ones(2))
