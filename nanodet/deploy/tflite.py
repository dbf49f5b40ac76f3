"""LiteRT (TFLite) models of an exported detector: the conversion, and running them like the ONNX model.

The conversion goes ONNX -> onnxslim (folds the shape arithmetic of ShuffleNetV2's channel
shuffle, which onnx2tf otherwise mistranslates) -> onnx2tf (TensorFlow, NHWC) -> float32 and
int8 LiteRT files, written as ``<name>_float32.tflite``, ``<name>_int8.tflite`` (calibrated on
the caller's images, float input and output) and ``<name>_int8_io.tflite`` (int8 input and output
too, as a microcontroller runs it). Converting needs TensorFlow and onnx2tf (``pip install
".[tflite-convert]"``); running a converted model needs only the LiteRT interpreter
(``ai-edge-litert``, in the test extra).

onnx2tf transposes the input to NHWC; the detector's output ``[1, N, C + 4 * (reg_max + 1)]``
keeps its layout. ``TFLiteModel`` takes the ONNX model's NCHW image, so the evaluation code of
``onnx_eval`` runs either model the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class TFLiteModel:
    """A LiteRT model that takes the exported ONNX model's ``[1, 3, H, W]`` float image and
    returns its raw output, quantizing and dequantizing where the model's input or output is int8."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise RuntimeError("running a .tflite model needs the LiteRT interpreter: "
                               "pip install ai-edge-litert") from None
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such LiteRT model")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except ValueError as err:
            raise ValueError(f"{path}: not a LiteRT model ({err})") from None
        (self.input,) = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(outputs) != 1:
            raise ValueError(f"{path}: expected one raw output, the model has {len(outputs)}")
        (self.output,) = outputs
        shape = tuple(int(s) for s in self.input["shape"])
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{path}: expected an NHWC [1, H, W, 3] input, the model has {list(shape)}")
        self.input_size = (shape[2], shape[1])  # (w, h), as onnx_input_size gives it

    def __call__(self, image: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(np.asarray(image, np.float32).transpose(0, 2, 3, 1))
        scale, zero_point = self.input["quantization"]
        if self.input["dtype"] != np.float32:
            info = np.iinfo(self.input["dtype"])
            data = np.clip(np.round(data / scale) + zero_point, info.min, info.max).astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], data)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] != np.float32:
            out = (out.astype(np.float32) - zero_point) * scale
        return out


@contextlib.contextmanager
def _offline_sample(folder: Path, calibration: np.ndarray) -> Iterator[None]:
    """onnx2tf checks every conversion on a sample file it downloads into the working folder when
    missing; offline, it is written here from the caller's own images (20 of them at 128x128)."""
    import cv2

    images = [cv2.resize(np.asarray(img, np.float32), (128, 128)) for img in calibration[:20]]
    while len(images) < 20:
        images += images[:20 - len(images)]
    low, high = float(calibration.min()), float(calibration.max())
    sample = (np.stack(images) - low) / max(high - low, 1e-6)  # onnx2tf's file holds [0, 1] images
    previous = os.getcwd()
    np.save(folder / ONNX2TF_SAMPLE, sample.astype(np.float32))
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def convert_to_tflite(onnx_path: str | Path, out_dir: str | Path, calibration: np.ndarray) -> dict[str, Path]:
    """The float32 and int8 LiteRT files of the fixed-size ONNX model at ``onnx_path``, in ``out_dir``.

    ``calibration``: ``[K, H, W, 3]`` float32 model inputs (normalized, NHWC) for the int8 model's
    activation ranges. Returns ``{"float32": path, "int8": path (float input and output),
    "int8_io": path (int8 input and output)}``.
    """
    try:
        import onnx2tf
        import onnxslim
    except ImportError:
        raise RuntimeError('converting to LiteRT needs TensorFlow and onnx2tf: '
                           'pip install ".[tflite-convert]"') from None
    import onnx

    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(onnx_path))
    (entry,) = model.graph.input
    input_name = entry.name
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        slim = work / f"{onnx_path.stem}.onnx"
        onnx.save(onnxslim.slim(model), str(slim))
        calibration_file = work / "calibration.npy"
        np.save(calibration_file, np.asarray(calibration, np.float32))
        with _offline_sample(work, calibration):
            # The float model from a conversion of its own: the float32 file of the quantizing
            # conversion differed from the ONNX model by up to 0.24 in a distribution logit (1e-5 alone).
            common = dict(input_onnx_file_path=str(slim), non_verbose=True, output_signaturedefs=True)
            onnx2tf.convert(output_folder_path=str(work / "float"), **common)
            onnx2tf.convert(
                output_folder_path=str(work / "int8"), **common,
                output_integer_quantized_tflite=True, quant_type="per-channel",
                custom_input_op_name_np_data_path=[[input_name, str(calibration_file), [[[[0.0, 0.0, 0.0]]]],
                                                    [[[[1.0, 1.0, 1.0]]]]]],  # the inputs are normalized already
            )
        stem = onnx_path.stem
        written = {"float32": work / "float" / f"{stem}_float32.tflite",
                   "int8": work / "int8" / f"{stem}_integer_quant.tflite",
                   "int8_io": work / "int8" / f"{stem}_full_integer_quant.tflite"}
        missing = [str(p.name) for p in written.values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"onnx2tf did not write {', '.join(missing)}")
        files = {kind: out_dir / f"{stem}_{kind}.tflite" for kind in written}
        for kind, path in written.items():
            shutil.move(str(path), files[kind])
    return files
