"""Static int8 quantization of an exported detector with onnxruntime, and its size on disk.

onnxruntime does the work (``quantize_static``): QDQ format, int8 weights per output channel,
uint8 activations (the pairing its x86 kernels run fastest), MinMax ranges observed on
calibration images fed through the val pipeline (no augmentation).

Sensitive nodes: the last 1x1 convs of the head (``gfl_cls``) can stay in fp32
(``keep_head_output_fp32``). Each of them emits the class logits and the distribution logits of
a level as one tensor, and a per-tensor activation scale must then cover both ranges, which
coarsens the scores. They hold about 5 % of the weights and under 2 % of the MACs.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from .onnx_eval import fixed_size_batches, onnx_input_size, onnx_session, spread_indices


class DatasetCalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader`` over images of a dataset (``indices`` or all),
    padded to the model's ``input_size`` (w, h)."""

    def __init__(self, dataset, input_name: str, input_size, indices=None):
        self.dataset = dataset
        self.input_name = input_name
        self.input_size = tuple(input_size)
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.rewind()

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch["img"].numpy()}

    def rewind(self):
        self._batches = iter(fixed_size_batches(self.dataset, self.input_size, self.indices))

    def __len__(self):
        return len(self.indices)


def calibration_reader(onnx_path, dataset, count: int) -> DatasetCalibrationReader:
    """A reader of ``count`` images of ``dataset`` spread over it, for the model at ``onnx_path``."""
    session = onnx_session(onnx_path, threads=1)
    return DatasetCalibrationReader(dataset, session.get_inputs()[0].name, onnx_input_size(session),
                                    spread_indices(len(dataset), count))


def head_output_conv_nodes(onnx_path) -> list[str]:
    """Names of the Conv nodes that produce the graph's outputs through no other Conv (the
    head's ``gfl_cls``)."""
    graph = onnx.load(str(onnx_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    found, seen = [], set()
    stack = [output.name for output in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            found.append(node.name)
        else:
            stack.extend(node.input)
    return sorted(found)


def quantize_onnx(fp32_path, int8_path, reader, keep_head_output_fp32: bool = True,
                  nodes_to_exclude=(), calibrate_method: str = "MinMax") -> Path:
    """Write the int8 (QDQ) version of the model at ``fp32_path`` to ``int8_path``, with the
    activation ranges observed on ``reader``'s images."""
    exclude = list(nodes_to_exclude)
    if keep_head_output_fp32:
        exclude += head_output_conv_nodes(fp32_path)
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's recommended preparation: shape inference and graph optimisation.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared), str(int8_path), reader,
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[calibrate_method], nodes_to_exclude=exclude or None,
        )
    return int8_path


def initializer_bytes(onnx_path) -> dict:
    """Bytes of the model's stored tensors (initializers) by data type, e.g. ``{"INT8": ...,
    "FLOAT": ...}``: the weights a device must hold."""
    totals = Counter()
    for tensor in onnx.load(str(onnx_path)).graph.initializer:
        array = numpy_helper.to_array(tensor)
        totals[helper.tensor_dtype_to_string(tensor.data_type).replace("TensorProto.", "")] += array.nbytes
    return dict(totals)
