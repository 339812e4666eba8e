"""Export a checkpoint to ONNX (fp32/fp16/int8) with a parity check against torch."""
