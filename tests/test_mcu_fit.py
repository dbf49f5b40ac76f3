"""The MCU fit report: flash by kind, the activation arena (QDQ folding, lifetimes, order search,
in-place ops, the planned arena) and the verdicts, on hand-built ONNX graphs whose bytes are
counted by hand in the comments, then end to end on an exported and quantized detector."""

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from nanodet.data.synthetic import SyntheticSpec, generate
from nanodet.deploy.mcu_fit import (DOES_NOT_FIT, FITS_ONE_REGION, FITS_SPLIT, TARGETS, Buffer, McuTarget,
                                    best_plan, best_schedule, exact_order, flash_bytes, greedy_order, mcu_graph,
                                    parse_target, plan_arena, ram_verdict, simulate, verdict)
from nanodet.deploy.onnx_eval import build_dataset_at_size
from nanodet.deploy.onnx_export import export_onnx
from nanodet.deploy.quantize import calibration_reader, quantize_onnx
from nanodet.model.arch import build_model
from nanodet.util import read_config
from nanodet.util.cli import run_main
from fixtures_tools import ROOT, load_tool

RNG = np.random.default_rng(0)
INPUT_SHAPE = [1, 3, 8, 8]


# ------------------------------------------------------------------------------- graph builders
def conv(name, x, out, cin, cout, kernel=3):
    """A float Conv with its weight and bias initializers ("same" padding)."""
    weight = numpy_helper.from_array(RNG.normal(size=(cout, cin, kernel, kernel)).astype(np.float32), f"{name}.w")
    bias = numpy_helper.from_array(RNG.normal(size=cout).astype(np.float32), f"{name}.b")
    node = helper.make_node("Conv", [x, weight.name, bias.name], [out], name=name, pads=[kernel // 2] * 4)
    return node, [weight, bias]


def model_of(nodes, initializers, input_shape=INPUT_SHAPE, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def fp32_branches():
    """x 1x3x8x8 -> Conv(3->4) c0 -> Relu r -> Conv a, Conv b (4->4 each) -> Add y."""
    c0, w0 = conv("c0", "x", "c0", 3, 4)
    a, wa = conv("a", "r", "a", 4, 4)
    b, wb = conv("b", "r", "b", 4, 4)
    nodes = [c0, helper.make_node("Relu", ["c0"], ["r"], name="relu"), a, b,
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    return model_of(nodes, w0 + wa + wb)


def qdq_activation(tensor):
    """QuantizeLinear then DequantizeLinear of an activation (uint8, one scale), as onnxruntime's
    QDQ format writes it: the quantized tensor is ``{tensor}_q``, the float one ``{tensor}_dq``."""
    scale = numpy_helper.from_array(np.array(0.1, np.float32), f"{tensor}_s")
    zero = numpy_helper.from_array(np.array(128, np.uint8), f"{tensor}_z")
    nodes = [helper.make_node("QuantizeLinear", [tensor, scale.name, zero.name], [f"{tensor}_q"], name=f"{tensor}_Q"),
             helper.make_node("DequantizeLinear", [f"{tensor}_q", scale.name, zero.name], [f"{tensor}_dq"],
                              name=f"{tensor}_DQ")]
    return nodes, [scale, zero]


def qdq_conv(name, x, out, cin, cout):
    """A Conv on DequantizeLinear'd int8 weights (per output channel) and int32 biases."""
    inits = [numpy_helper.from_array(RNG.integers(-127, 127, (cout, cin, 3, 3)).astype(np.int8), f"{name}.w_q"),
             numpy_helper.from_array(np.full(cout, 0.01, np.float32), f"{name}.w_s"),
             numpy_helper.from_array(np.zeros(cout, np.int8), f"{name}.w_z"),
             numpy_helper.from_array(RNG.integers(-999, 999, cout).astype(np.int32), f"{name}.b_q"),
             numpy_helper.from_array(np.full(cout, 0.001, np.float32), f"{name}.b_s"),
             numpy_helper.from_array(np.zeros(cout, np.int32), f"{name}.b_z")]
    nodes = [helper.make_node("DequantizeLinear", [f"{name}.w_q", f"{name}.w_s", f"{name}.w_z"], [f"{name}.w"], axis=0),
             helper.make_node("DequantizeLinear", [f"{name}.b_q", f"{name}.b_s", f"{name}.b_z"], [f"{name}.b"], axis=0),
             helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name, pads=[1] * 4)]
    return nodes, inits


def qdq_branches():
    """``fp32_branches`` quantized as tools/quantize.py does: int8 weights per channel, int32
    biases, uint8 activations between every pair of ops, the output dequantized to fp32."""
    nodes, inits = [], []
    for part in (qdq_activation("x"), qdq_conv("c0", "x_dq", "c0", 3, 4), qdq_activation("c0"),
                 ([helper.make_node("Relu", ["c0_dq"], ["r"], name="relu")], []), qdq_activation("r"),
                 qdq_conv("a", "r_dq", "a", 4, 4), qdq_activation("a"),
                 qdq_conv("b", "r_dq", "b", 4, 4), qdq_activation("b"),
                 ([helper.make_node("Add", ["a_dq", "b_dq"], ["s"], name="add")], []), qdq_activation("s")):
        nodes += part[0]
        inits += part[1]
    nodes[-1].output[0] = "y"  # the last DequantizeLinear writes the graph's fp32 output
    return model_of(nodes, inits)


def order_matters():
    """Two branches off x 1x3x8x8: Conv(3->16) big -> Conv(16->1) s1, and Conv(3->8) m ->
    Conv(8->1) s2; Add(s1, s2) y. The model lists both wide convs first."""
    big, w1 = conv("big", "x", "big", 3, 16)
    mid, w2 = conv("mid", "x", "m", 3, 8)
    s1, w3 = conv("s1", "big", "s1", 16, 1)
    s2, w4 = conv("s2", "m", "s2", 8, 1)
    return model_of([big, mid, s1, s2, helper.make_node("Add", ["s1", "s2"], ["y"], name="add")], w1 + w2 + w3 + w4)


def relu_beside_a_branch():
    """x 1x1x8x8 -> Conv(1->8) c; Conv(8->8, 1x1) e of c; Relu r of c; Add(r, e) y."""
    c, w1 = conv("c", "x", "c", 1, 8)
    e, w2 = conv("e", "c", "e", 8, 8, kernel=1)
    nodes = [c, e, helper.make_node("Relu", ["c"], ["r"], name="relu"), helper.make_node("Add", ["r", "e"], ["y"])]
    return model_of(nodes, w1 + w2, input_shape=[1, 1, 8, 8])


def chain():
    """x 1x3x8x8 -> Conv(3->8) c -> Relu r -> Conv(8->2) y."""
    c, w1 = conv("c", "x", "c", 3, 8)
    y, w2 = conv("y", "r", "y", 8, 2)
    return model_of([c, helper.make_node("Relu", ["c"], ["r"], name="relu"), y], w1 + w2)


def op_index(graph, name):
    return next(i for i, op in enumerate(graph.ops) if op.name == name)


# ------------------------------------------------------------------------------------- flash
def test_flash_of_an_fp32_model_is_its_float_weights_and_the_graph():
    model = fp32_branches()
    flash = flash_bytes(model)
    # c0: 4*3*3*3 = 108 weights + 4 biases; a and b: 4*4*3*3 = 144 + 4 each; 4 bytes each:
    # (108 + 4 + 2 * (144 + 4)) * 4 = 1632.
    assert flash.float_weights == 1632
    assert flash.int8_weights == flash.int32_biases == flash.quant_params == 0
    assert flash.graph_estimate == model.ByteSize() - 1632
    assert flash.total == model.ByteSize()


def test_flash_of_a_qdq_model_counts_each_weight_once_in_its_quantized_type():
    model = qdq_branches()
    flash = flash_bytes(model)
    assert flash.int8_weights == 108 + 144 + 144          # one byte a weight
    assert flash.int32_biases == 3 * 4 * 4                 # 3 convs, 4 channels, 4 bytes
    # Weights: 3 convs x 4 channels x (fp32 scale 4 B + int8 zero point 1 B) = 60; biases:
    # 3 x 4 x (scale 4 B + int32 zero point 4 B) = 96; activations x, c0, r, a, b, s: 6 x (4 + 1) = 30.
    assert flash.quant_params == 60 + 96 + 30
    assert flash.float_weights == 0
    assert flash.graph_estimate == model.ByteSize() - (396 + 48 + 186)


# --------------------------------------------------------------------------- peak live bytes
def test_live_bytes_of_an_fp32_graph_follow_each_tensors_lifetime():
    graph = mcu_graph(fp32_branches())
    assert [op.name for op in graph.ops] == ["c0", "relu", "a", "b", "add"]
    # x 3*64*4 = 768 B, every other tensor 4*64*4 = 1024 B. Per op (inputs and outputs count):
    # c0: x + c0 = 1792 (x dies); relu: c0 + r = 2048; a: r + a = 2048; b: r + a + b = 3072 (r
    # dies); add: a + b + y = 3072.
    schedule = simulate(graph, range(5), inplace=False)
    assert schedule.step_bytes == [1792, 2048, 2048, 3072, 3072]
    assert (schedule.peak_bytes, schedule.peak_step) == (3072, 3)
    assert dict(schedule.live_at_peak) == {"r": 1024, "a": 1024, "b": 1024}


def test_a_qdq_graph_folds_to_int8_kernels_on_uint8_activations():
    graph = mcu_graph(qdq_branches())
    assert [(op.op_type, op.quantized) for op in graph.ops] == [
        ("Conv", True), ("Relu", True), ("Conv", True), ("Conv", True), ("Add", True), ("DequantizeLinear", False)]
    dtypes = {name: tensor.dtype for name, tensor in graph.tensors.items()}
    assert dtypes == {"x": "uint8", "c0": "uint8", "r": "uint8", "a": "uint8", "b": "uint8", "s": "uint8",
                      "y": "float32"}
    assert graph.inputs == ("x",) and graph.tensors["x"].nbytes == 3 * 64
    # x 192 B, each 4-channel tensor 256 B, the fp32 output 1024 B. c0: 192 + 256 = 448; relu:
    # 512; a: 512; b: 768; add: 768; the dequantize: s + y = 256 + 1024 = 1280.
    schedule = simulate(graph, range(6), inplace=False)
    assert schedule.step_bytes == [448, 512, 512, 768, 768, 1280]
    assert simulate(graph, range(6), inplace=True).step_bytes == [448, 256, 512, 768, 512, 1280]


# ----------------------------------------------------------------------------- order search
def test_the_search_finds_the_order_that_does_not_hold_the_big_tensor():
    graph = mcu_graph(order_matters())
    # x 768 B, big 16*64*4 = 4096, m 8*64*4 = 2048, s1 = s2 = y = 256. The model's order runs
    # both wide convs first: at "mid" x + big + m = 6912 are live.
    naive = simulate(graph, range(5), inplace=False)
    assert naive.peak_bytes == 6912
    # Best: finish a branch before starting the other. Whichever conv of x runs last, x is live
    # there with its output and one more tensor: x + big + s1 (or s2) = 768 + 4096 + 256 = 5120.
    exact = simulate(graph, exact_order(graph, inplace=False), inplace=False)
    assert exact.peak_bytes == 5120
    assert simulate(graph, greedy_order(graph, inplace=False), inplace=False).peak_bytes <= naive.peak_bytes
    best = best_schedule(graph, inplace=False)
    assert best.peak_bytes == 5120 and best.exact_search.startswith("complete")


def test_past_its_budget_the_exact_search_gives_way_to_the_greedy_order():
    graph = mcu_graph(order_matters())
    assert exact_order(graph, inplace=False, max_states=2) is None
    best = best_schedule(graph, inplace=False, max_states=2)
    assert best.exact_search.startswith("stopped") and best.found_by.startswith("greedy")
    assert best.peak_bytes == 5120  # here the greedy order is the best one too


def test_an_op_in_place_lowers_the_peak_by_exactly_the_buffer_it_reuses():
    graph = mcu_graph(relu_beside_a_branch())
    order = [op_index(graph, name) for name in ("c", "e", "relu")] + [3]
    # x 256 B, c = e = r = y = 8*64*4 = 2048. Without in-place: c: x + c = 2304; e: c + e = 4096;
    # relu: c + e + r = 6144; add: r + e + y = 6144.
    assert simulate(graph, order, inplace=False).step_bytes == [2304, 4096, 6144, 6144]
    # The Relu writes into c, which dies there; the Add into r or e: each peak step loses 2048.
    in_place = simulate(graph, order, inplace=True)
    assert in_place.step_bytes == [2304, 4096, 4096, 4096]
    assert simulate(graph, order, inplace=False).peak_bytes - in_place.peak_bytes == graph.tensors["c"].nbytes
    # Run the Relu before "e" reads c and c is still needed: no reuse there (c + r, then c + r + e).
    early = [op_index(graph, name) for name in ("c", "relu", "e")] + [3]
    assert simulate(graph, early, inplace=True).step_bytes == [2304, 4096, 6144, 4096]
    assert best_schedule(graph, inplace=True).peak_bytes == 4096


# ---------------------------------------------------------------------------------- the arena
def test_the_planned_arena_equals_the_peak_on_a_chain():
    graph = mcu_graph(chain())
    schedule = simulate(graph, range(3), inplace=False)
    # x 768 [op 0], c 2048 [0-1], r 2048 [1-2], y 512 [2]: the peak is c + r = 4096 at the Relu;
    # largest first: c at 0, r at 2048, x at 2048 (r not yet alive), y at 0 (c dead): 4096.
    assert schedule.peak_bytes == 4096
    plan = plan_arena(schedule.buffers)
    assert plan.nbytes == 4096
    assert plan.offsets == {("c",): 0, ("r",): 2048, ("x",): 2048, ("y",): 0}


def test_the_planned_arena_is_at_least_the_peak_and_gaps_can_make_it_larger():
    for model in (fp32_branches(), qdq_branches(), order_matters(), relu_beside_a_branch()):
        graph = mcu_graph(model)
        for inplace in (True, False):
            schedule = best_schedule(graph, inplace)
            assert plan_arena(schedule.buffers).nbytes >= schedule.peak_bytes
    # The shape of the detector's fp32 tail. Live bytes per step: 0: A = 64; 1: A + B = 128;
    # 2: B + E = 80; 3: B + D + E = 112; 4: C + D + E = 112; peak 128.
    buffers = [Buffer(("A",), 64, 0, 1), Buffer(("B",), 64, 1, 3), Buffer(("C",), 64, 4, 4),
               Buffer(("D",), 32, 3, 4), Buffer(("E",), 16, 2, 4)]
    # Largest first: A 0, B 64, C 0 (A and B dead by then), D above both B and C at 128, E above
    # B, C and D at 160: 176 bytes.
    tflm = plan_arena(buffers)
    assert tflm.nbytes == 176 and tflm.offsets[("E",)] == 160
    # By bytes x lifetime (B 192, A 128, D 64, C 64, E 48): B 0, A 64, D 64, C 0, E 96: 128.
    best = best_plan(buffers)
    assert (best.nbytes, best.placement) == (128, "largest bytes x lifetime first")


# --------------------------------------------------------------------------------- verdicts
def test_verdicts_name_one_region_split_regions_or_no_fit():
    part = McuTarget("part", flash_kib=4, ram_kib=2, largest_region_kib=1)
    assert ram_verdict(part, 1024) == FITS_ONE_REGION == "fits in one region"
    assert ram_verdict(part, 1025) == ram_verdict(part, 2048) == FITS_SPLIT == "fits only split across regions"
    assert ram_verdict(part, 2049) == DOES_NOT_FIT == "does not fit"
    assert verdict(part, 4096, 512)["verdict"] == "fits in one region"
    short_of_flash = verdict(part, 4097, 512)
    assert not short_of_flash["flash_fits"] and short_of_flash["verdict"] == "does not fit"
    figures = {t.name: (t.flash_kib, t.ram_kib, t.largest_region_kib) for t in TARGETS}
    assert figures == {"STM32H743": (2048, 1024, 512), "STM32H747 (Cortex-M7)": (2048, 1024, 512),
                       "STM32F767": (2048, 512, 368)}


def test_a_target_is_read_from_the_command_line_form():
    assert parse_target("MY:1024:320:256") == McuTarget("MY", 1024, 320, 256)
    assert parse_target("MY:1024:320").largest_region_kib == 320  # one block
    for bad in ("MY:1024", "MY:x:320", "MY:1024:320:512", ":1:1", "MY:0:1"):
        with pytest.raises(ValueError, match=f"--target '{bad}'"):
            parse_target(bad)


# ------------------------------------------------------------------------------------- the CLI
def test_the_tool_prints_the_report_and_writes_it_as_json(tmp_path, capsys):
    path = tmp_path / "qdq.onnx"
    onnx.save(qdq_branches(), str(path))
    report = load_tool("fit_report").main([str(path), "--target", "BIG:8:2", "--target", "SPLIT:8:2:1",
                                           "--json", str(tmp_path / "fit.json")])
    printed = capsys.readouterr().out
    assert report["kind"] == "int8 (QDQ)" and report["flash"]["int8_weights"] == 396
    assert report["ram"]["inplace"]["peak_live_bytes"] == report["ram"]["no_inplace"]["peak_live_bytes"] == 1280
    verdicts = {t["target"]: t["verdict"] for t in report["targets"]}
    # The model is under 8 KiB; the arena (1280 B: 16-byte multiples already) above 1 KiB, under 2 KiB.
    assert report["flash"]["total"] < 8 * 1024 and report["ram"]["inplace"]["planned_arena_bytes"] == 1280
    assert verdicts["BIG"] == "fits in one region" and verdicts["SPLIT"] == "fits only split across regions"
    assert json.loads((tmp_path / "fit.json").read_text())["targets"] == report["targets"]
    for text in ("1 KiB = 1024 bytes", "int8 weights", "graph description (estimate)", "peak of live bytes",
                 "planned (TFLite Micro greedy)", "fits only split across regions",
                 "s_DQ (DequantizeLinear, conversion)"):
        assert text in printed


def test_the_tool_refuses_a_file_that_is_not_an_onnx_model_in_one_line(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model\n")
    with pytest.raises(SystemExit, match=r"^error: .*notes\.onnx: not an ONNX model"):
        run_main(load_tool("fit_report").main, [str(bad)])
    with pytest.raises(SystemExit, match=r"^error: .*missing\.onnx: no such file$"):
        run_main(load_tool("fit_report").main, [str(tmp_path / "missing.onnx")])


# ------------------------------------------------------------------------------ end to end
# A narrow NanoDet-Plus (ShuffleNetV2 0.5x, 32-channel neck and head), random weights: memory
# does not depend on what the weights are.
SMALL_MODEL = ["model.arch.backbone.model_size=0.5x", "model.arch.fpn.in_channels=[48, 96, 192]",
               "model.arch.fpn.out_channels=32", "model.arch.head.input_channel=32",
               "model.arch.head.feat_channels=32", "model.arch.head.stacked_convs=1"]


def test_the_report_of_an_exported_and_quantized_detector(tmp_path):
    cfg = read_config(ROOT / "cfg/demo.yml", SMALL_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    spec = SyntheticSpec(train=4, test=1, seed=3, width=64, height=64)
    node = {"name": "SyntheticDataset", "root": str(generate(tmp_path / "data", spec, workers=1)),
            "split": "trainval", "synthetic": spec.to_json(), "input_size": [64, 64], "keep_ratio": True,
            "pipeline": {"normalize": [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]}}
    dataset = build_dataset_at_size(node, (64, 64), cfg.class_names)
    fp32 = export_onnx(model, tmp_path / "small.onnx", (64, 64))
    int8 = quantize_onnx(fp32, tmp_path / "small_int8.onnx", calibration_reader(fp32, dataset, 2))

    report = load_tool("fit_report").main([str(int8)])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert report["flash"]["int8_weights"] == sum(conv.weight.numel() for conv in convs)
    assert report["flash"]["int32_biases"] == 4 * sum(conv.out_channels for conv in convs)  # BatchNorm folded in
    assert report["input"] == [{"name": "data", "shape": [1, 3, 64, 64], "dtype": "uint8", "bytes": 3 * 64 * 64}]
    for mode in report["ram"].values():
        assert mode["planned_arena_bytes"] >= mode["peak_live_bytes"] >= 3 * 64 * 64
        assert sum(row["bytes"] for row in mode["live_at_peak"]) == mode["peak_live_bytes"]
    assert report["ram"]["inplace"]["peak_live_bytes"] <= report["ram"]["no_inplace"]["peak_live_bytes"]
    assert report["int8_ops"] > 0.9 * report["ops"]  # all but the fp32 output tail

    fp32_report = load_tool("fit_report").main([str(fp32)])
    assert fp32_report["flash"]["float_weights"] > 3.5 * report["flash"]["int8_weights"]
    # 4-byte activations: the int8 model's peak is a quarter of the fp32 model's or a little more
    # (its fp32 tail).
    ratio = report["ram"]["no_inplace"]["peak_live_bytes"] / fp32_report["ram"]["no_inplace"]["peak_live_bytes"]
    assert 0.25 <= ratio < 0.4


def small_calibration_set(tmp_path, size):
    spec = SyntheticSpec(train=2, test=1, seed=3, width=64, height=64)
    node = {"name": "SyntheticDataset", "root": str(generate(tmp_path / "data", spec, workers=1)),
            "split": "trainval", "synthetic": spec.to_json(), "input_size": list(size), "keep_ratio": True,
            "pipeline": {"normalize": [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]}}
    return build_dataset_at_size(node, size, read_config(ROOT / "cfg/demo.yml").class_names)


def test_a_per_level_export_is_the_raw_output_and_int8_to_its_outputs(tmp_path):
    from nanodet.deploy.onnx_eval import levels_to_raw, onnx_session

    cfg = read_config(ROOT / "cfg/demo.yml", SMALL_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    raw = onnx_session(export_onnx(model, tmp_path / "raw.onnx", (64, 64)))
    levels_path = export_onnx(model, tmp_path / "levels.onnx", (64, 64), per_level=True)
    levels = onnx_session(levels_path)
    assert [o.name for o in levels.get_outputs()] == ["level0", "level1", "level2", "level3"]
    assert [o.shape[2:] for o in levels.get_outputs()] == [[8, 8], [4, 4], [2, 2], [1, 1]]  # strides 8 to 64
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert np.abs(levels_to_raw(levels.run(None, {"data": image}), cfg.model.arch.head.num_classes)
                  - raw.run(None, {"data": image})[0]).max() < 1e-5
    int8 = quantize_onnx(levels_path, tmp_path / "levels_int8.onnx",
                         calibration_reader(levels_path, small_calibration_set(tmp_path, (64, 64)), 2))
    report = load_tool("fit_report").main([str(int8)])
    # no fp32 tail left: every op is an int8 kernel but the dequantize of each level's output
    assert report["ops"] - report["int8_ops"] == 4
    assert [step["op_type"] for step in report["ram"]["inplace"]["timeline"]].count("DequantizeLinear") == 4
    for mode in report["ram"].values():
        assert all(row["dtype"] == "uint8" for row in mode["live_at_peak"])


def test_the_microcontroller_variant_fits_one_region_of_an_stm32h743(tmp_path):
    cfg = read_config(ROOT / "cfg/synthetic_mcu.yml")
    assert list(cfg.data.train.input_size) == list(cfg.data.val.input_size) == [224, 224]
    torch.manual_seed(0)
    fp32 = export_onnx(build_model(cfg.model).eval(), tmp_path / "mcu.onnx", (224, 224), per_level=True)
    int8 = quantize_onnx(fp32, tmp_path / "mcu_int8.onnx",
                         calibration_reader(fp32, small_calibration_set(tmp_path, (224, 224)), 1))
    report = load_tool("fit_report").main([str(int8)])
    # the uint8 input (3 x 224 x 224) and the stem's output (24 x 112 x 112) live together: 441 KiB
    assert report["ram"]["inplace"]["peak_live_bytes"] == 3 * 224 * 224 + 24 * 112 * 112
    verdicts = {v["target"]: v["verdict"] for v in report["targets"]}
    assert verdicts["STM32H743"] == FITS_ONE_REGION
