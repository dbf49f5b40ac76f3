"""Edge deployment: ONNX export, int8 quantization with onnxruntime, and evaluation of ONNX models."""
