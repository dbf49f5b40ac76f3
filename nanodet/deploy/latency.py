"""Inference time of one image on the CPU: an ONNX model with onnxruntime, a LiteRT (TFLite) model
with its interpreter (XNNPACK), the float PyTorch model.

What an edge CPU pays per frame: batch 1, the network alone (no decoding or NMS, which the
head's post-processing adds on the host either way), after warm-up runs, as the median of
timed runs with its 10th and 90th percentiles. ``threads`` is the intra-op thread count (1: one
core, as a single-core device runs; 0: every core of the machine).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch


def machine() -> dict:
    """The CPU the numbers were taken on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "onnxruntime": ort.__version__, "torch": torch.__version__}


def _timed(run: Callable[[], object], runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    deciles = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "p10_ms": deciles[0], "p90_ms": deciles[-1], "runs": runs}


def onnx_latency(path: str | Path, threads: int = 1, runs: int = 50, warmup: int = 10) -> dict:
    """Per-image inference time of the ONNX model at ``path`` with onnxruntime's CPU provider.
    Its own session, not ``onnx_eval.onnx_session``: that one turns thread spinning off for the
    evaluation's host work between images, which would add wake-up time to every run timed here."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, every core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for a bad file
        raise ValueError(f"{path}: onnxruntime cannot load it ({err})") from None
    (entry,) = session.get_inputs()
    if not all(isinstance(d, int) for d in entry.shape):
        raise ValueError(f"{path}: input {entry.name} has a dynamic shape {entry.shape}; export a fixed size")
    image = np.random.default_rng(0).standard_normal(entry.shape).astype(np.float32)
    return {**_timed(lambda: session.run(None, {entry.name: image}), runs, warmup), "threads": threads}


def tflite_latency(path: str | Path, threads: int = 1, runs: int = 50, warmup: int = 10) -> dict:
    """Per-image inference time of the LiteRT model at ``path`` (``nanodet.deploy.tflite``)."""
    from .tflite import TFLiteModel

    model = TFLiteModel(path, threads=threads or os.cpu_count())
    width, height = model.input_size
    image = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    return {**_timed(lambda: model(image), runs, warmup), "threads": threads}


def torch_latency(model: torch.nn.Module, input_size: tuple[int, int], threads: int = 1, runs: int = 50,
                  warmup: int = 10) -> dict:
    """Per-image inference time of the float PyTorch ``model`` on the CPU at ``input_size`` (w, h)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        model = model.eval().cpu()
        image = torch.randn(1, 3, input_size[1], input_size[0])
        with torch.inference_mode():
            result = _timed(lambda: model(image), runs, warmup)
    finally:
        torch.set_num_threads(previous)
    return {**result, "threads": threads}
