"""Quality metrics for attribution masks (paper 1: segmentation.py; others beside it)."""
