"""LiteRT (TFLite) models: the runner takes the ONNX model's NCHW image and gives its output.

tests/data/tiny_head.onnx (a strided conv, LeakyReLU, then reshaped and transposed to [1, N, C]
as the detector's output is) was converted by ``nanodet.deploy.tflite.convert_to_tflite``
(onnx2tf 1.29, TensorFlow 2.21) into the two .tflite files beside it: float32, and int8 with
int8 input and output, calibrated on 32 random images.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from nanodet.deploy.onnx_eval import onnx_session
from nanodet.deploy.tflite import TFLiteModel, convert_to_tflite

DATA = Path(__file__).parent / "data"


def images(count=4):
    return np.random.default_rng(1).standard_normal((count, 1, 3, 16, 16)).astype(np.float32)


def onnx_output(image):
    session = onnx_session(DATA / "tiny_head.onnx")
    return session.run(None, {"data": image})[0]


def test_the_float_model_gives_the_onnx_models_output_in_its_layout():
    model = TFLiteModel(DATA / "tiny_head_float32.tflite")
    assert model.input_size == (16, 16)
    for image in images():
        out = model(image)
        assert out.shape == (1, 64, 6) and out.dtype == np.float32
        assert np.abs(out - onnx_output(image)).max() < 1e-5


def test_the_int8_model_is_fed_and_read_through_its_quantization():
    model = TFLiteModel(DATA / "tiny_head_int8_io.tflite")
    assert model.input["dtype"] == np.int8 and model.output["dtype"] == np.int8
    output_step = model.output["quantization"][0]
    for image in images():
        expected = onnx_output(image)
        out = model(image)
        assert out.dtype == np.float32 and out.shape == expected.shape
        # a few quantization steps of the output, against a value range of several units
        assert np.abs(out - expected).max() < 6 * output_step + 0.05 * np.abs(expected).max()
        assert np.corrcoef(out.ravel(), expected.ravel())[0, 1] > 0.99


def test_bad_files_and_a_missing_converter_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.tflite: no such LiteRT model"):
        TFLiteModel(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.tflite: not a LiteRT model"):
        TFLiteModel(junk)
    monkeypatch.setitem(sys.modules, "onnx2tf", None)  # as where TensorFlow is not installed
    with pytest.raises(RuntimeError, match=r'pip install "\.\[tflite-convert\]"'):
        convert_to_tflite(DATA / "tiny_head.onnx", tmp_path, np.zeros((1, 16, 16, 3), np.float32))
