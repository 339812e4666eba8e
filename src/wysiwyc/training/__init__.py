"""Training: the fit loop, one task per trainable thing, their losses and the shared set-up.

- :mod:`.fit` — :class:`Task`, :class:`Trainer`, :class:`FitConfig` (Adam, schedules,
  early stopping, resume).
- :mod:`.classifier`, :mod:`.explainer`, :mod:`.rtis`, :mod:`.mask_predictor` — one task each.
- :mod:`.setup` — the frozen classifier and data every head-training script starts from.
- :mod:`.losses` — the Explainer, RTIS and mask-predictor losses.
"""

from .fit import FitConfig, FitResult, Task, Trainer

__all__ = ["FitConfig", "FitResult", "Task", "Trainer"]
