"""Each training script interrupted mid-run and continued with ``--resume`` ends where the
uninterrupted run ends: the same weights (to float tolerance) and the same per-epoch losses.

A finished fit removes its ``OUT.last.pt`` (the mask predictor's filter stage keeps its own,
marked finished, until the checkpoint is written, so a run resumed in the generator stage
does not train the filter again), so "``--epochs N``, then ``--resume --epochs M``"
starts afresh, and the classifier's cosine schedule spans the run's own ``--epochs``: the
honest stop is an interruption. It is Ctrl-C (KeyboardInterrupt, exit 130) raised after the
first optimisation step of a chosen epoch, so the script dies with that epoch half done and
its resume file holding the epochs before it; the same command with ``--resume`` then finishes
the job. Tiny runs: 32 px, 64 training images in batches of 16 (4 steps per epoch), 3 epochs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from _helpers import load_script
from wysiwyc.checkpoint import load_checkpoint
from wysiwyc.training import Trainer

TINY = ["--train-length", "64", "--val-length", "32", "--batch-size", "16", "--patience", "10", "--no-progress",
        "--device", "cpu"]
# per-run timings differ between runs; everything else must not
TIMINGS = {"train_seconds", "steps_per_s", "samples_per_s"}


@dataclass
class Fits:
    """Every :meth:`Trainer.fit` of the scripts run in a test, and where to interrupt one.

    Attributes:
        histories: each finished fit's per-epoch metrics, in order.
        finals: each finished fit's trained modules' state at its end, in order.
        stop: interrupt the fit whose resume file ends in ``.{stage}.last.pt`` (any fit when
            ``stage`` is None) in this 1-based epoch; None: never.
        stage: see ``stop``.
    """

    histories: list[list[dict[str, float]]] = field(default_factory=list)
    finals: list[dict[str, dict[str, torch.Tensor]]] = field(default_factory=list)
    stop: int | None = None
    stage: str | None = None


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fits]:
    state = Fits()
    fit, step = Trainer.fit, Trainer._optimisation_step

    def recording_fit(self: Trainer):  # noqa: ANN202
        result = fit(self)
        state.histories.append(result.history)
        state.finals.append({m: {k: v.detach().clone() for k, v in sd.items()}
                             for m, sd in self.task.state_dict().items()})
        return result

    def interruptible_step(self: Trainer, batches, epoch: int, index: int):  # noqa: ANN001, ANN202
        logs = step(self, batches, epoch, index)
        stage_ok = state.stage is None or str(self.resume_path).endswith(f".{state.stage}.last.pt")
        if state.stop == epoch + 1 and index == 0 and stage_ok:
            raise KeyboardInterrupt  # Ctrl-C with the epoch's first step taken
        return logs

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    monkeypatch.setattr(Trainer, "_optimisation_step", interruptible_step)
    yield state


def _same_history(got: list[dict[str, float]], want: list[dict[str, float]]) -> None:
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-6, abs=1e-7), (g["epoch"], k)


def _same_weights(got: dict[str, torch.Tensor] | None, want: dict[str, torch.Tensor] | None) -> None:
    assert (got is None) == (want is None)
    if want is None:
        return
    assert got.keys() == want.keys()  # type: ignore[union-attr]
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, rtol=0, atol=1e-6, msg=k)  # type: ignore[index]


def _same_metrics(got: dict, want: dict) -> None:
    for k in want.keys() - TIMINGS:
        if isinstance(want[k], dict):
            _same_metrics(got[k], want[k])
        elif isinstance(want[k], float):
            assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-7), k
        else:
            assert got[k] == want[k], k


def _interrupt_and_resume(script: str, args: list[str], tmp_path: Path, fits: Fits, capsys: pytest.CaptureFixture[str],
                          stop: int, stage: str | None = None, done: tuple[str, ...] = ()) -> None:
    """Run ``script`` through, then interrupted in epoch ``stop`` (of ``stage``) and resumed;
    the two must end the same. ``done``: the stages finished before ``stage``, which the resumed
    run takes from their kept resume files without training them again."""
    main = load_script(script).main
    whole, run = tmp_path / "whole.pt", tmp_path / "run.pt"
    resume = Path(f"{run}.{stage}.last.pt" if stage else f"{run}.last.pt")

    assert main([*args, "-o", str(whole)]) == 0
    reference, reference_finals = fits.histories, fits.finals
    fits.histories, fits.finals = [], []
    capsys.readouterr()

    fits.stop, fits.stage = stop, stage
    assert main([*args, "-o", str(run)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not run.exists() and resume.is_file()
    saved = torch.load(resume, map_location="cpu", weights_only=True)
    assert saved["epoch"] == stop - 2 and len(saved["history"]) == stop - 1  # the epochs before the stop
    fits.stop, fits.histories, fits.finals = None, [], []

    for d in done:  # kept, marked finished, until the script has written its checkpoint
        assert torch.load(f"{run}.{d}.last.pt", map_location="cpu", weights_only=True)["finished"] is True
    steps = []
    real_step = Trainer._optimisation_step
    counting = lambda self, *a: steps.append(str(self.resume_path)) or real_step(self, *a)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_optimisation_step", counting)
        assert main([*args, "--resume", "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {resume} at epoch {stop}" in out
    for d in done:
        assert f"resumed from {run}.{d}.last.pt: this fit had finished" in out
        assert not any(p.endswith(f".{d}.last.pt") for p in steps)  # not a single step of it again
    assert not resume.exists() and not any(Path(f"{run}.{d}.last.pt").exists() for d in done)

    assert len(fits.histories) == len(reference)
    for got, want in zip(fits.histories, reference):
        _same_history(got, want)
    for got_state, want_state in zip(fits.finals, reference_finals):
        assert got_state.keys() == want_state.keys()
        for m in want_state:
            _same_weights(got_state[m], want_state[m])
    a, b = load_checkpoint(run), load_checkpoint(whole)
    _same_weights(a.classifier, b.classifier)
    _same_weights(a.head, b.head)
    _same_metrics(a.metrics, b.metrics)
    # not vacuous: after the resume, training moved the weights on from the resume file's
    final = next(f for f in fits.finals if f.keys() == saved["task"].keys())
    assert any(not torch.allclose(saved["task"][m][k].float(), final[m][k].float(), atol=1e-4)
               for m in final for k in final[m])


@pytest.mark.slow
def test_train_classifier_resumed_after_an_interruption_matches_the_uninterrupted_run(
        tmp_path: Path, fits: Fits, capsys: pytest.CaptureFixture[str]) -> None:
    """Cosine schedule, Adam moments, dropout draws and the shuffle order all carry over."""
    args = [*TINY, "--image-size", "32", "--test-length", "32", "--epochs", "3"]
    _interrupt_and_resume("train/train_classifier.py", args, tmp_path, fits, capsys, stop=2)


@pytest.mark.slow
def test_train_explainer_resumed_after_an_interruption_matches_the_uninterrupted_run(
        tiny_classifier: Path, tmp_path: Path, fits: Fits, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*TINY, "--classifier", str(tiny_classifier), "--width", "4", "--levels", "2", "--epochs", "3",
            "--lr", "1e-3"]
    _interrupt_and_resume("train/train_explainer.py", args, tmp_path, fits, capsys, stop=2)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["filter", "generator"])
def test_train_mask_predictor_resumed_in_either_stage_matches_the_uninterrupted_run(
        stage: str, tiny_classifier: Path, tmp_path: Path, fits: Fits, capsys: pytest.CaptureFixture[str]) -> None:
    """Two fits, each with its own resume file; the generator's step decay halves every epoch."""
    args = [*TINY, "--classifier", str(tiny_classifier), "--width", "8", "--targets", "labels",
            "--filter-epochs", "3", "--epochs", "3", "--lr-step-epochs", "1"]
    _interrupt_and_resume("train/train_mask_predictor.py", args, tmp_path, fits, capsys, stop=2, stage=stage,
                          done=("filter",) if stage == "generator" else ())


def test_a_foreign_resume_file_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clf.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, f"{out}.last.pt")  # loads, but is no resume state
    rc = load_script("train/train_classifier.py").main([*TINY, "--image-size", "32", "--epochs", "1", "--resume",
                                                        "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0] == (f"error: cannot resume from {out}.last.pt: not a resume file of "
                                                    "this training loop; remove it to start afresh")
    assert not out.exists()
