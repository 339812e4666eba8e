"""wysiwyc — what you see is what you classify.

Single-pass per-class attribution masks for frozen image classifiers: train an
Explainer (Stalder et al.) or a mask predictor, export it to ONNX/TensorRT, run it
on live video, and benchmark it against the slow methods it replaces.

Importing this package is cheap: it imports neither torch nor any optional
dependency; submodules do that on their own.
"""

__version__ = "0.1.0"
