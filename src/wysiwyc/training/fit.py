"""One fit loop for every trainable thing: progress bar, validation, early stopping, resume.

A :class:`Task` owns the trainable modules and knows how to compute a loss on a batch and
how to evaluate; :class:`Trainer` owns the loop (Adam, optional cosine or step-decay schedule, epochs,
tqdm bar with loss and ETA, early stopping on a monitored metric, best-state tracking and a
resume file written atomically after every epoch).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..fileio import atomic_path


class Task:
    """A trainable job. Subclasses set ``self.modules`` (name -> trainable module).

    ``global_step`` is the index of the current optimisation step over the whole fit (the
    :class:`Trainer` sets it before each step, resume included), for step-dependent losses.
    """

    modules: dict[str, nn.Module]
    global_step: int = 0

    def parameters(self) -> Iterator[nn.Parameter]:
        for m in self.modules.values():
            yield from (p for p in m.parameters() if p.requires_grad)

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)

    def to(self, device: torch.device) -> "Task":
        for m in self.modules.values():
            m.to(device)
        return self

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {k: m.state_dict() for k, m in self.modules.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state[k])

    def training_step(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar tensor with grad) and scalars to show on the progress bar."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any], device: torch.device) -> dict[str, float]:
        """Validation metrics; must contain the trainer's ``monitor`` key."""
        raise NotImplementedError


@dataclass
class FitConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    cosine: bool = False
    lr_step_epochs: int | None = None  # step decay: multiply the lr by lr_step_gamma every N epochs
    lr_step_gamma: float = 0.5
    monitor: str = "val_loss"
    mode: str = "min"  # "min" or "max"
    patience: int = 5
    min_delta: float = 1e-3
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = None
    seed: int = 0
    progress: bool = True  # the tqdm bar; per-epoch summary lines always print


@dataclass
class FitResult:
    best_state: dict[str, dict[str, torch.Tensor]]
    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool


class Trainer:
    """Runs a :class:`Task` with Adam; early-stops on ``config.monitor``.

    Args:
        task: the job.
        train_loader, val_loader: batches for :meth:`Task.training_step` / :meth:`Task.evaluate`.
        config: loop settings.
        device: where to train.
        resume_path: file for the per-epoch resume state; when it exists and ``resume``
            is true the loop continues from it. Removed after a successful fit.
    """

    def __init__(self, task: Task, train_loader: DataLoader, val_loader: Iterable[Any] | None,
                 config: FitConfig, device: torch.device, resume_path: str | Path | None = None,
                 resume: bool = False) -> None:
        self.task, self.train_loader, self.val_loader = task, train_loader, val_loader
        self.cfg, self.device = config, device
        self.resume_path = Path(resume_path) if resume_path else None
        self.resume = resume
        self.task.to(device)
        self.optim = torch.optim.Adam(list(task.parameters()), lr=config.lr, weight_decay=config.weight_decay)
        steps = len(train_loader) if config.max_steps_per_epoch is None else min(len(train_loader), config.max_steps_per_epoch)
        self.steps_per_epoch = max(1, steps)
        self.sched = None
        if config.cosine:
            total = config.epochs * self.steps_per_epoch
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.optim, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
        elif config.lr_step_epochs:
            every = config.lr_step_epochs * self.steps_per_epoch
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.optim, lambda s: config.lr_step_gamma ** (s // every))

    def _better(self, score: float, best: float) -> bool:
        if self.cfg.mode == "min":
            return score < best - self.cfg.min_delta
        return score > best + self.cfg.min_delta

    def fit(self) -> FitResult:
        cfg = self.cfg
        start_epoch, best = 0, (math.inf if cfg.mode == "min" else -math.inf)
        best_state, best_metrics, best_epoch, bad, history = None, {}, -1, 0, []
        if self.resume and self.resume_path is not None and self.resume_path.is_file():
            st = torch.load(self.resume_path, map_location="cpu", weights_only=True)
            self.task.load_state_dict(st["task"])
            self.optim.load_state_dict(st["optim"])
            if self.sched is not None and st.get("sched"):
                self.sched.load_state_dict(st["sched"])
            start_epoch, best, bad = st["epoch"] + 1, st["best"], st["bad"]
            best_state, best_metrics, best_epoch = st["best_state"], st["best_metrics"], st["best_epoch"]
            history = st["history"]
            torch.set_rng_state(st["rng"])
            print(f"resumed from {self.resume_path} at epoch {start_epoch + 1}")
        elif self.resume:
            print(f"no resume file at {self.resume_path}; starting fresh")

        stopped = False
        for epoch in range(start_epoch, cfg.epochs):
            running = self._train_epoch(epoch)
            self.task.train(False)
            metrics = {f"train_{k}": v for k, v in running.items()}
            if self.val_loader is not None:
                metrics.update(self.task.evaluate(self.val_loader, self.device))
            metrics["epoch"] = epoch + 1
            history.append(metrics)
            score = metrics.get(cfg.monitor, metrics.get("train_loss", 0.0))
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch")
            if self._better(score, best) or best_state is None:
                best, best_epoch, bad = score, epoch + 1, 0
                best_state = copy.deepcopy({k: {n_: t.detach().cpu().clone() for n_, t in s.items()}
                                            for k, s in self.task.state_dict().items()})
                best_metrics = dict(metrics)
                mark = " *"
            else:
                bad += 1
                mark = ""
            print(f"epoch {epoch + 1}/{cfg.epochs}: {shown}{mark}", flush=True)
            self._save_resume(epoch, best, bad, best_state, best_metrics, best_epoch, history)
            if bad >= cfg.patience:
                stopped = True
                print(f"early stopping: {cfg.monitor} did not improve for {bad} epochs", flush=True)
                break
        assert best_state is not None, "no epoch ran (epochs must be >= 1)"
        if self.resume_path is not None and self.resume_path.exists():
            os.remove(self.resume_path)
        return FitResult(best_state, best_metrics, best_epoch, history, stopped)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of optimisation steps; returns the running means of the loss and the logs."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1000 + epoch)  # the shuffle order depends on the epoch only
        self.task.train(True)
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress, leave=False, dynamic_ncols=True)
        running: dict[str, float] = {}
        n = 0
        for step, batch in enumerate(self.train_loader):
            if step >= self.steps_per_epoch:
                break
            self.task.global_step = epoch * self.steps_per_epoch + step
            loss, logs = self.task.training_step(batch, self.device)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at epoch {epoch + 1} step {step}")
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(list(self.task.parameters()), cfg.grad_clip)
            self.optim.step()
            if self.sched is not None:
                self.sched.step()
            n += 1
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                running[k] = running.get(k, 0.0) + (v - running.get(k, 0.0)) / n
            bar.set_postfix({k: f"{v:.4f}" for k, v in list(running.items())[:4]})
            bar.update(1)
        bar.close()
        return running

    def _save_resume(self, epoch: int, best: float, bad: int, best_state: Any, best_metrics: dict[str, float],
                     best_epoch: int, history: list[dict[str, float]]) -> None:
        if self.resume_path is None:
            return
        st = {
            "epoch": epoch, "best": best, "bad": bad, "best_state": best_state, "best_metrics": best_metrics,
            "best_epoch": best_epoch, "history": history, "task": self.task.state_dict(),
            "optim": self.optim.state_dict(), "sched": self.sched.state_dict() if self.sched else None,
            "rng": torch.get_rng_state(),
        }
        with atomic_path(self.resume_path) as tmp:
            torch.save(st, tmp)
