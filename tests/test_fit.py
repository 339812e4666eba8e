"""The fit loop's resume path: a run stopped after k epochs and resumed matches an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from wysiwyc.training import FitConfig, Task, Trainer


class _Stop(Exception):
    """Stands in for a crash or Ctrl-C in the middle of an epoch."""


class _Regression(Task):
    """A small dropout MLP on fixed random data: its losses depend on the shuffle order, the
    dropout draws, Adam's moments and the schedule — everything a resume must restore.

    Args:
        stop_at_epoch: raise :class:`_Stop` at the first step of this (1-based) epoch.
    """

    def __init__(self, stop_at_epoch: int | None = None) -> None:
        torch.manual_seed(123)
        self.net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1))
        self.modules = {"net": self.net}
        self.stop_at_epoch, self.epoch_steps = stop_at_epoch, 0

    def training_step(self, batch, device):  # noqa: ANN001, ANN201
        x, y = (t.to(device) for t in batch)
        self.epoch_steps += 1
        if self.stop_at_epoch is not None and self.epoch_steps == 1 + (self.stop_at_epoch - 1) * 4:
            raise _Stop
        loss = nn.functional.mse_loss(self.net(x), y)
        return loss, {"mse": float(loss.detach())}

    @torch.no_grad()
    def evaluate(self, loader, device):  # noqa: ANN001, ANN201
        x, y = loader
        return {"val_loss": float(nn.functional.mse_loss(self.net(x.to(device)), y.to(device)))}


def _data() -> tuple[DataLoader, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(16, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True), (x[:8], y[:8])


@pytest.mark.parametrize("schedule", [{"cosine": True}, {"lr_step_epochs": 2}])
def test_resume_after_k_epochs_matches_an_uninterrupted_run(tmp_path: Path, schedule: dict) -> None:
    epochs, k = 5, 2
    cfg = FitConfig(epochs=epochs, lr=0.05, patience=epochs, progress=False, seed=7, **schedule)
    cpu = torch.device("cpu")
    train, val = _data()

    whole = _Regression()
    ref = Trainer(whole, train, val, cfg, cpu, resume_path=tmp_path / "whole.pt").fit()

    resume = tmp_path / "run.pt"
    with pytest.raises(_Stop):  # stopped at the start of epoch k + 1: the resume file holds k epochs
        Trainer(_Regression(stop_at_epoch=k + 1), train, val, cfg, cpu, resume_path=resume).fit()
    assert resume.is_file() and torch.load(resume, weights_only=True)["epoch"] == k - 1
    torch.manual_seed(999)  # the resumed process starts from another global RNG state
    again = _Regression()
    torch.nn.init.zeros_(again.net[0].weight)  # and other initial weights: the resume file must win
    out = Trainer(again, train, val, cfg, cpu, resume_path=resume, resume=True).fit()

    assert not resume.exists()  # removed after a successful fit
    assert [h["epoch"] for h in out.history] == list(range(1, epochs + 1))
    assert out.history == ref.history and out.best_epoch == ref.best_epoch
    for name, tensor in whole.net.state_dict().items():
        assert torch.equal(again.net.state_dict()[name], tensor), name
    for name, tensor in ref.best_state["net"].items():
        assert torch.equal(out.best_state["net"][name], tensor), name
