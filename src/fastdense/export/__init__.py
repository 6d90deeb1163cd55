"""Exporting models for serving without fastdense: `model.export(path, format="onnx")`."""
from .onnx import export_onnx

__all__ = ["export_onnx"]
