"""One fit loop for every trainable thing: progress bar, validation, early stopping, resume.

A :class:`Task` owns the trainable modules and knows how to compute a loss on a batch and
how to evaluate; :class:`Trainer` owns the loop (Adam, optional cosine or step-decay schedule, epochs,
tqdm bar with loss and ETA, early stopping on a monitored metric, best-state tracking and a
resume file written atomically after every epoch).

The same loop runs as one rank of a ``torchrun`` job (:mod:`wysiwyc.distributed`): only the
task's trainable modules are wrapped in DistributedDataParallel (a frozen classifier is never
synchronised), every rank sees its own shard, validation metrics are combined over ranks so
every rank takes the same early-stopping decision, and rank 0 alone prints and writes.
Gradient accumulation and CUDA mixed precision (bf16, or fp16 with a gradient scaler) are
options of :class:`FitConfig`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..distributed import DistContext, reduce_weighted_means
from ..errors import UserError
from ..fileio import atomic_path

AMP_MODES = ("off", "auto", "bf16", "fp16")
RANK_SEED_STRIDE = 100_003  # per-rank offset of the epoch seed: ranks draw different random numbers


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
    accumulate: int = 1  # micro-batches per optimisation step (global batch = batch × world × accumulate)
    amp: str = "off"  # off | auto (CUDA: bf16 where supported, else fp16) | bf16 | fp16 (CUDA only)
    compile: bool = False  # torch.compile the trainable modules


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp MODE`` on ``device`` (``None`` = full precision).

    ``auto`` is bf16 on CUDA GPUs that support it, else fp16 (with a gradient scaler), and off
    on CPU; ``bf16`` also runs on CPU (autocast's CPU path); ``fp16`` needs CUDA.
    """
    if mode not in AMP_MODES:
        raise UserError(f"--amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a CUDA device (use --amp bf16 on CPU)")
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


@dataclass
class RunScale:
    """How big one optimisation step is, printed at start and stored in the checkpoint.

    ``lr`` is ``lr_base`` scaled by ``lr_scaling``: ``none`` keeps it, ``linear`` multiplies
    by world_size × accumulate, ``sqrt`` by its square root (the flag's value is the rate for
    one process at ``--batch-size``).
    """

    world_size: int
    backend: str | None
    per_rank_batch: int
    accumulate: int
    global_batch: int
    lr_base: float
    lr_scaling: str
    lr: float
    amp: str

    def describe(self) -> str:
        return (f"world {self.world_size} ({self.backend or 'one process'}) × batch {self.per_rank_batch} × "
                f"accumulate {self.accumulate} = global batch {self.global_batch}; lr {self.lr:g} "
                f"(--lr-scaling {self.lr_scaling}); amp {self.amp}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LR_SCALINGS = {"none": lambda k: 1.0, "linear": float, "sqrt": math.sqrt}


def run_scale(ctx: DistContext, batch_size: int, accumulate: int, lr: float, lr_scaling: str = "none",
              amp: str = "off") -> RunScale:
    """The global batch and learning rate of a run (see :class:`RunScale`)."""
    if accumulate < 1:
        raise UserError(f"--accumulate must be >= 1, got {accumulate}")
    if lr_scaling not in LR_SCALINGS:
        raise UserError(f"--lr-scaling must be one of {', '.join(LR_SCALINGS)}, got {lr_scaling!r}")
    k = ctx.world_size * accumulate
    return RunScale(ctx.world_size, ctx.backend, batch_size, accumulate, batch_size * k, lr, lr_scaling,
                    lr * LR_SCALINGS[lr_scaling](k), amp)


RESUME_KEYS = frozenset({"epoch", "best", "bad", "best_state", "best_metrics", "best_epoch", "history", "task",
                         "optim", "rng"})


def load_resume_state(path: str | Path) -> dict[str, Any]:
    """A resume file written by :class:`Trainer` (``weights_only``: no code in it runs).

    Raises:
        UserError: a file that does not load as tensors and plain values, or lacks a resume
            state's fields (one line; removing the file starts the run afresh).
    """
    p = Path(path)
    try:
        st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("Weights only load failed"):
            first = "not a torch file of tensors and plain dicts"
        raise UserError(f"cannot resume from {p} ({first[:160]}); remove it to start afresh") from exc
    if not isinstance(st, dict) or not RESUME_KEYS <= st.keys():
        raise UserError(f"cannot resume from {p}: not a resume file of this training loop; remove it to start afresh")
    return st


class _StepModule(nn.Module):
    """The task's trainable modules as one module whose forward is a training step, so that
    DistributedDataParallel sees (and synchronises) exactly those parameters, whichever of
    their methods the task calls."""

    def __init__(self, task: "Task", device: torch.device) -> None:
        super().__init__()
        self.trained = nn.ModuleDict(task.modules)
        self.task, self.device = task, device

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task.training_step(batch, self.device)


@dataclass
class FitResult:
    best_state: dict[str, dict[str, torch.Tensor]]
    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool
    throughput: dict[str, float] = field(default_factory=dict)  # training steps/s and samples/s (all ranks)


class Trainer:
    """Runs a :class:`Task` with Adam; early-stops on ``config.monitor``.

    Args:
        task: the job.
        train_loader, val_loader: batches for :meth:`Task.training_step` / :meth:`Task.evaluate`.
        config: loop settings.
        device: where to train.
        resume_path: file for the per-epoch resume state; when it exists and ``resume``
            is true the loop continues from it (written by rank 0, read by every rank, so a
            multi-node job needs it on a shared filesystem). Removed after a successful fit,
            unless ``keep_finished``: then it is kept, marked finished, and a resumed fit
            returns its result without training (a multi-stage script resumed in a later stage
            does not redo the stages before it; the script removes the files at its end).
        dist: this process's place in a ``torchrun`` job (default: a world of one on ``device``).

    A step consumes ``config.accumulate`` batches of ``train_loader``; its shuffle order comes
    from the loader's sampler (``set_epoch`` is called when it has one) or else from the torch
    seed, which is reset to ``seed·1000 + epoch`` (+ a per-rank offset) before every epoch.
    """

    def __init__(self, task: Task, train_loader: DataLoader, val_loader: Iterable[Any] | None,
                 config: FitConfig, device: torch.device, resume_path: str | Path | None = None,
                 resume: bool = False, dist: DistContext | None = None, keep_finished: bool = False) -> None:
        self.task, self.train_loader, self.val_loader = task, train_loader, val_loader
        self.keep_finished = keep_finished
        self.cfg, self.device = config, device
        self.ctx = dist or DistContext(device=device)
        self.resume_path = Path(resume_path) if resume_path else None
        self.resume = resume
        self.task.to(device)
        self.amp_dtype = resolve_amp(config.amp, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if config.compile:
            for m in task.modules.values():
                m.compile()
        self.step_module: nn.Module = _StepModule(task, device)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device] if device.type == "cuda" else None)
        self.optim = torch.optim.Adam(list(task.parameters()), lr=config.lr, weight_decay=config.weight_decay)
        steps = len(train_loader) // max(1, config.accumulate)
        if config.max_steps_per_epoch is not None:
            steps = min(steps, config.max_steps_per_epoch)
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

    def _print(self, *args: Any) -> None:
        if self.ctx.is_main:
            print(*args, flush=True)

    def _better(self, score: float, best: float) -> bool:
        if self.cfg.mode == "min":
            return score < best - self.cfg.min_delta
        return score > best + self.cfg.min_delta

    def fit(self) -> FitResult:
        cfg = self.cfg
        start_epoch, best = 0, (math.inf if cfg.mode == "min" else -math.inf)
        best_state, best_metrics, best_epoch, bad, history = None, {}, -1, 0, []
        if self.resume and self.resume_path is not None and self.resume_path.is_file():
            st = load_resume_state(self.resume_path)
            self.task.load_state_dict(st["task"])
            if st.get("finished"):
                self._print(f"resumed from {self.resume_path}: this fit had finished (best epoch {st['best_epoch']})")
                torch.set_rng_state(st["rng"])
                return FitResult(st["best_state"], st["best_metrics"], st["best_epoch"], st["history"],
                                 bool(st.get("stopped", False)), dict(st.get("throughput") or {}))
            self.optim.load_state_dict(st["optim"])
            if self.sched is not None and st.get("sched"):
                self.sched.load_state_dict(st["sched"])
            if self.scaler is not None and st.get("scaler"):
                self.scaler.load_state_dict(st["scaler"])
            start_epoch, best, bad = st["epoch"] + 1, st["best"], st["bad"]
            best_state, best_metrics, best_epoch = st["best_state"], st["best_metrics"], st["best_epoch"]
            history = st["history"]
            torch.set_rng_state(st["rng"])
            was = st.get("world_size", 1)
            self._print(f"resumed from {self.resume_path} at epoch {start_epoch + 1}"
                        + (f" (saved by a world of {was}, now {self.ctx.world_size})" if was != self.ctx.world_size else ""))
        elif self.resume:
            self._print(f"no resume file at {self.resume_path}; starting fresh")

        stopped = False
        seconds, steps = 0.0, 0
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            running = self._train_epoch(epoch)
            seconds, steps = seconds + time.perf_counter() - t0, steps + self.steps_per_epoch
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
            self._print(f"epoch {epoch + 1}/{cfg.epochs}: {shown}{mark}")
            self._save_resume(epoch, best, bad, best_state, best_metrics, best_epoch, history)
            if bad >= cfg.patience:
                stopped = True
                self._print(f"early stopping: {cfg.monitor} did not improve for {bad} epochs")
                break
        assert best_state is not None, "no epoch ran (epochs must be >= 1)"
        throughput = self._throughput(steps, seconds)
        if self.keep_finished:
            self._save_resume(cfg.epochs - 1, best, bad, best_state, best_metrics, best_epoch, history,
                              finished={"stopped": stopped, "throughput": throughput})
        elif self.ctx.is_main and self.resume_path is not None and self.resume_path.exists():
            os.remove(self.resume_path)
        return FitResult(best_state, best_metrics, best_epoch, history, stopped, throughput)

    def _throughput(self, steps: int, seconds: float) -> dict[str, float]:
        """Optimisation steps and training samples per second of the epochs this process ran
        (validation excluded; samples counted over every rank and accumulated batch)."""
        if seconds <= 0 or steps == 0:
            return {}
        batch = getattr(self.train_loader, "batch_size", None) or 0
        per_step = batch * max(1, self.cfg.accumulate) * self.ctx.world_size
        return {"steps_per_s": round(steps / seconds, 3), "samples_per_s": round(steps * per_step / seconds, 1)}

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of optimisation steps; returns the running means of the loss and the logs
        (averaged over every rank's samples)."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        # the shuffle order depends on the epoch only; other draws differ between ranks
        torch.manual_seed(cfg.seed * 1000 + epoch + RANK_SEED_STRIDE * self.ctx.rank)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.task.train(True)
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.ctx.is_main), leave=False, dynamic_ncols=True)
        running: dict[str, float] = {}
        batches = iter(self.train_loader)
        for step in range(self.steps_per_epoch):
            self.task.global_step = epoch * self.steps_per_epoch + step
            logs = self._optimisation_step(batches, epoch, step)
            for k, v in logs.items():
                running[k] = running.get(k, 0.0) + (v - running.get(k, 0.0)) / (step + 1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in list(running.items())[:4]})
            bar.update(1)
        bar.close()
        n = self.steps_per_epoch
        return reduce_weighted_means({k: v * n for k, v in running.items()}, n)

    def _optimisation_step(self, batches: Iterator[Any], epoch: int, step: int) -> dict[str, float]:
        """Forward/backward over ``accumulate`` micro-batches, then one optimiser step; the
        gradients are averaged over ranks on the last micro-batch only (DDP ``no_sync``)."""
        cfg, acc = self.cfg, max(1, self.cfg.accumulate)
        self.optim.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for micro in range(acc):
            last = micro == acc - 1
            sync = (self.step_module.no_sync() if self.ctx.distributed and not last else contextlib.nullcontext())
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    loss, micro_logs = self.step_module(next(batches))
                if not torch.isfinite(loss):
                    raise RuntimeError(f"loss became {loss.item()} at epoch {epoch + 1} step {step} "
                                       f"(rank {self.ctx.rank})")
                scaled = loss.float() / acc
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            for k, v in {"loss": float(loss.detach()), **micro_logs}.items():
                logs[k] = logs.get(k, 0.0) + v / acc
        if cfg.grad_clip:
            if self.scaler:
                self.scaler.unscale_(self.optim)
            torch.nn.utils.clip_grad_norm_(list(self.task.parameters()), cfg.grad_clip)
        if self.scaler:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()
        if self.sched is not None:
            self.sched.step()
        return logs

    def _save_resume(self, epoch: int, best: float, bad: int, best_state: Any, best_metrics: dict[str, float],
                     best_epoch: int, history: list[dict[str, float]], finished: dict[str, Any] | None = None) -> None:
        """The resume state after ``epoch``; ``finished`` (the fit's end: ``stopped`` and
        ``throughput``) marks a finished fit kept for a later stage's resume."""
        if self.resume_path is None or not self.ctx.is_main:
            return
        st = {
            **({"finished": True, **finished} if finished is not None else {}),
            "epoch": epoch, "best": best, "bad": bad, "best_state": best_state, "best_metrics": best_metrics,
            "best_epoch": best_epoch, "history": history, "task": self.task.state_dict(),
            "optim": self.optim.state_dict(), "sched": self.sched.state_dict() if self.sched else None,
            "rng": torch.get_rng_state(), "world_size": self.ctx.world_size,
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }
        with atomic_path(self.resume_path) as tmp:
            torch.save(st, tmp)
