"""One interface for every attribution method, ours and the baselines.

``method(images (B,3,H,W) in [0,1], classes (B,K) long) -> masks (B,K,H,W) in [0,1]``,
torch tensors on the input's device, batched. Methods are registered by name and built
with :func:`build_method`; each module below registers itself when imported.
"""

from .base import METHODS, Attribution, build_method, available_methods, register_method

__all__ = ["METHODS", "Attribution", "build_method", "available_methods", "register_method"]
