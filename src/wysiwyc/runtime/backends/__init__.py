"""Runtime backends, one module each: ``torch`` (``.pt``), ``onnxruntime`` (``.onnx``),
``tensorrt`` (``.engine``), on the shared :class:`~.base.Backend` and its registry."""

from .base import BACKENDS, Backend, ModelError, default_model, describe_model, open_backend, register_backend

__all__ = ["BACKENDS", "Backend", "ModelError", "default_model", "describe_model", "open_backend",
           "register_backend"]
