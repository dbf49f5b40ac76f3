"""Per-image inference time on the CPU: the timing helpers and the tool (numbers are measured by
the tool, never asserted)."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fixtures_tools import load_tool
from nanodet.deploy.latency import onnx_latency, torch_latency


def tiny_onnx(path, shape=(1, 3, 16, 16)):
    weight = numpy_helper.from_array(torch.randn(4, 3, 3, 3).numpy(), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_onnx_and_torch_timings_report_their_spread_and_threads(tmp_path):
    timing = onnx_latency(tiny_onnx(tmp_path / "tiny.onnx"), threads=1, runs=5, warmup=1)
    assert timing["threads"] == 1 and timing["runs"] == 5
    assert 0 < timing["p10_ms"] <= timing["median_ms"] <= timing["p90_ms"]
    before = torch.get_num_threads()
    timing = torch_latency(torch.nn.Conv2d(3, 4, 3), (16, 16), threads=1, runs=3, warmup=1)
    assert timing["median_ms"] > 0 and torch.get_num_threads() == before  # the caller's threads are restored


def test_a_tflite_model_is_timed_by_its_interpreter():
    from pathlib import Path

    from nanodet.deploy.latency import tflite_latency

    timing = tflite_latency(Path(__file__).parent / "data" / "tiny_head_float32.tflite", threads=1, runs=3, warmup=1)
    assert timing["median_ms"] > 0 and timing["threads"] == 1


def test_a_dynamic_or_broken_model_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="dynamic shape"):
        onnx_latency(tiny_onnx(tmp_path / "dynamic.onnx", shape=("batch", 3, 16, 16)))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="broken.onnx: onnxruntime cannot load it"):
        onnx_latency(broken)


def test_the_tool_times_every_model_at_every_thread_count(tmp_path, capsys):
    tool = load_tool("latency")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    result = tool.main(["cfg/demo.yml", "--onnx", str(model), "--threads", "1", "2", "--runs", "3",
                        "--json", str(tmp_path / "latency.json")])
    assert [(r["model"].endswith("tiny.onnx"), r["threads"]) for r in result["rows"]] == [
        (True, 1), (False, 1), (True, 2), (False, 2)]  # the ONNX model, then PyTorch, per thread count
    assert "PyTorch float32 160x160" in capsys.readouterr().out
    assert (tmp_path / "latency.json").is_file()
    with pytest.raises(SystemExit, match="missing.onnx: no such model file"):
        tool.main(["cfg/demo.yml", "--onnx", str(tmp_path / "missing.onnx")])
