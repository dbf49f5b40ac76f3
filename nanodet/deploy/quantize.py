"""Static int8 quantization of an exported detector with onnxruntime, and its size on disk.

onnxruntime does the work (``quantize_static``): QDQ format, int8 weights per output channel,
uint8 activations (the pairing its x86 kernels run fastest), MinMax ranges observed on
calibration images fed through the val pipeline (no augmentation).

Sensitive nodes: the graph's output tail (the reshapes, concatenations and sigmoid after the
head's last convs) always stays in fp32. Quantized, it would put the class probabilities and the
distance logits, which share one output tensor, on one scale: steps of about 0.1 in the scores,
which cost about 1 point of mAP on the synthetic benchmark. It holds no weights and next to no
compute. The last convs themselves (``gfl_cls``, 1.7 % of the parameters and 2.4 % of the MACs
for 20 classes at 320x320) can be kept in fp32 too (``keep_head_output_fp32``).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from .onnx_eval import fixed_size_batches, onnx_input_size, onnx_session, spread_indices


class DatasetCalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader`` over images of a dataset (``indices`` or all),
    padded to the model's ``input_size`` (w, h)."""

    def __init__(self, dataset: torch.utils.data.Dataset, input_name: str, input_size: Sequence[int],
                 indices: Iterable[int] | None = None) -> None:
        self.dataset = dataset
        self.input_name = input_name
        self.input_size = tuple(input_size)
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch["img"].numpy()}

    def rewind(self) -> None:
        self._batches = iter(fixed_size_batches(self.dataset, self.input_size, self.indices))

    def __len__(self):
        return len(self.indices)


def calibration_reader(onnx_path: str | Path, dataset: torch.utils.data.Dataset,
                       count: int) -> DatasetCalibrationReader:
    """A reader of ``count`` images of ``dataset`` spread over it, for the model at ``onnx_path``."""
    session = onnx_session(onnx_path, threads=1)
    return DatasetCalibrationReader(dataset, session.get_inputs()[0].name, onnx_input_size(session),
                                    spread_indices(len(dataset), count))


def output_tail(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """``(tail, last_convs)``: the names of the nodes between the graph's last convolutions and
    its outputs (reshapes, concatenations, the sigmoid), and of those convolutions (the head's
    ``gfl_cls``)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tail, last_convs, seen = [], [], set()
    stack = [output.name for output in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            last_convs.append(node.name)
        else:
            tail.append(node.name)
            stack.extend(node.input)
    return sorted(tail), sorted(last_convs)


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, reader: CalibrationDataReader,
                  keep_head_output_fp32: bool = False, nodes_to_exclude: Iterable[str] = (),
                  calibrate_method: str = "MinMax") -> Path:
    """Write the int8 (QDQ) version of the model at ``fp32_path`` to ``int8_path``, with the
    activation ranges observed on ``reader``'s images.

    The output tail (after the last convolutions) always stays in fp32: quantizing it would give
    the class probabilities and the distance logits, concatenated in one tensor, one scale (steps
    of about 0.1 in the scores). ``keep_head_output_fp32`` keeps the last convolutions in fp32
    too; ``nodes_to_exclude`` names further nodes to leave in fp32.
    """
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's recommended preparation: shape inference and graph optimisation. Node
        # names are read from the prepared graph, the one that is quantized.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        tail, last_convs = output_tail(onnx.load(str(prepared)))
        exclude = list(nodes_to_exclude) + tail + (last_convs if keep_head_output_fp32 else [])
        quantize_static(
            str(prepared), str(int8_path), reader,
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[calibrate_method], nodes_to_exclude=exclude,
            # MinMax folds its ranges every few images instead of keeping every activation of
            # every calibration image in memory (gigabytes at 320x320).
            extra_options={"CalibMaxIntermediateOutputs": calibration_chunk(len(reader) if hasattr(reader, "__len__")
                                                                            else None)},
        )
    return int8_path


def calibration_chunk(count: int | None, preferred: int = 16) -> int:
    """Images per MinMax fold. onnxruntime's calibrator fails with "No data is collected" when the
    number of images is a multiple of it (its last fold is empty), so the largest size up to
    ``preferred`` that leaves a remainder is taken."""
    if count is None:
        return preferred
    return next(chunk for chunk in range(preferred, 1, -1) if count < chunk or count % chunk)


def initializer_bytes(onnx_path: str | Path) -> dict[str, int]:
    """Bytes of the model's stored tensors (initializers) by data type, e.g. ``{"INT8": ...,
    "FLOAT": ...}``: the weights a device must hold."""
    totals = Counter()
    for tensor in onnx.load(str(onnx_path)).graph.initializer:
        array = numpy_helper.to_array(tensor)
        totals[helper.tensor_dtype_to_string(tensor.data_type).replace("TensorProto.", "")] += array.nbytes
    return dict(totals)
