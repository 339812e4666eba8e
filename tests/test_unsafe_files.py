"""Every loader of a user-supplied torch file refuses a malicious pickle, and no code in it runs.

The payload's ``__reduce__`` calls ``Path.touch(marker)``: an unrestricted ``torch.load`` of it
creates the marker file (:func:`test_the_payload_runs_under_an_unrestricted_load` shows it
does), so a loader that unpickled it would leave the marker behind. Each payload is written
with ``torch.save``, either alone or inside a dict shaped like what the loader expects (a
format-3 checkpoint, a ``{"state_dict": ...}`` weights file, a resume state), and a
TorchScript archive whose pickles are replaced by the payload goes to the TorchScript routes.
Library loaders raise a one-line :class:`~wysiwyc.errors.UserError` naming the file (bytes
inside a checkpoint: naming the TorchScript they fail to be); scripts print one ``error:``
line on stderr and exit 2.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from _helpers import load_script
from wysiwyc.errors import UserError

DISGUISES = ("bare", "shaped")


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., None], tuple[Path]]:
        return (Path.touch, (self.marker,))


def _shaped(payload: _Payload) -> dict:
    """The payload inside what a loader looks for: a format-3 checkpoint's fields, a state dict
    under ``state_dict`` and a resume state's keys."""
    return {"format": "wysiwyc-checkpoint", "format_version": 3,
            "spec": {"class_names": ["a", "b"], "image_size": [32, 32], "kind": "classifier"},
            "classifier": {"top.weight": payload}, "head": None, "train": {}, "metrics": {},
            "state_dict": {"conv.weight": payload}, "epoch": 0, "task": {"net": {"w": payload}}}


def _write(path: Path, marker: Path, disguise: str) -> Path:
    payload = _Payload(marker)
    torch.save(payload if disguise == "bare" else _shaped(payload), path)
    return path


def _torchscript_archive(marker: Path) -> bytes:
    """A real TorchScript archive (a scripted Linear) whose ``data.pkl`` and ``constants.pkl``
    are the payload."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch marks TorchScript deprecated
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(("/data.pkl", "/constants.pkl")):
                data = pickle.dumps(_Payload(marker), protocol=2)
            dst.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture(params=DISGUISES)
def payload(request: pytest.FixtureRequest, tmp_path: Path, marker: Path) -> Path:
    """A malicious ``.pt`` (bare, or shaped like a checkpoint / weights file / resume state)."""
    return _write(tmp_path / "model.pt", marker, request.param)


def _refused_in_one_line(exc: pytest.ExceptionInfo[UserError], path: Path, marker: Path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert not marker.exists()


def _script_refused(capsys: pytest.CaptureFixture[str], rc: int, path: Path, marker: Path) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error:") and str(path) in err[0], err
    assert not marker.exists()


def test_the_payload_runs_under_an_unrestricted_load(payload: Path, marker: Path) -> None:
    torch.load(payload, weights_only=False)
    assert marker.is_file()


# --------------------------------------------------------------------------- library loaders
def test_load_checkpoint_refuses_the_payload(payload: Path, marker: Path) -> None:
    from wysiwyc.checkpoint import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(payload)
    _refused_in_one_line(exc, payload, marker)


def test_load_state_refuses_the_payload(payload: Path, marker: Path) -> None:
    from wysiwyc.models.classifiers import load_state

    with pytest.raises(UserError) as exc:
        load_state(payload)
    _refused_in_one_line(exc, payload, marker)


def test_build_classifier_weights_refuses_the_payload(payload: Path, marker: Path) -> None:
    from wysiwyc.models.classifiers import build_classifier

    with pytest.raises(UserError) as exc:
        build_classifier("small_cnn", 6, weights=payload)
    _refused_in_one_line(exc, payload, marker)


def test_runtime_open_backend_refuses_the_payload(payload: Path, marker: Path) -> None:
    from wysiwyc.runtime.backends import open_backend

    with pytest.raises(UserError) as exc:
        open_backend(payload, device="cpu")
    _refused_in_one_line(exc, payload, marker)


def test_a_checkpoint_whose_torchscript_classifier_is_the_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    """A wrapped TorchScript classifier travels as bytes inside the checkpoint: loading the
    checkpoint (weights_only) is safe, and building the classifier from those bytes must be too."""
    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.explanandum import TORCHSCRIPT_KEY
    from wysiwyc.models.fused import load_model
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.spec import ModelSpec

    spec = ModelSpec(class_names=["a", "b"], image_size=(32, 32), classifier_arch="torchscript", dataset="",
                     activation="softmax")
    raw = torch.frombuffer(bytearray(_torchscript_archive(marker)), dtype=torch.uint8)
    path = save_checkpoint(tmp_path / "wrapped.pt", spec, {TORCHSCRIPT_KEY: raw})
    for load in (load_model, lambda p: open_backend(p, device="cpu")):
        with pytest.raises(UserError) as exc:
            load(path)
        assert "\n" not in str(exc.value) and "TorchScript" in str(exc.value), str(exc.value)
        assert not marker.exists()


# --------------------------------------------------------------------------- scripts (exit 2)
def test_runtime_explain_model_refuses_the_payload(payload: Path, marker: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from wysiwyc.runtime import cli

    rc = cli.main(["--demo", "--model", str(payload), "--device", "cpu", "--max-frames", "1", "--no-show"])
    _script_refused(capsys, rc, payload, marker)


@pytest.mark.parametrize("script", ["train/train_explainer.py", "train/train_mask_predictor.py"])
def test_head_training_classifier_refuses_the_payload(script: str, payload: Path, marker: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc = load_script(script).main(["--classifier", str(payload), "--epochs", "1", "--train-length", "8",
                                   "--val-length", "8", "--no-progress", "--device", "cpu",
                                   "-o", str(tmp_path / "head.pt")])
    _script_refused(capsys, rc, payload, marker)
    assert not (tmp_path / "head.pt").exists()


def test_train_classifier_weights_refuses_the_payload(payload: Path, marker: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc = load_script("train/train_classifier.py").main(
        ["--weights", str(payload), "--epochs", "1", "--train-length", "8", "--val-length", "8", "--image-size", "32",
         "--no-progress", "--device", "cpu", "-o", str(tmp_path / "clf.pt")])
    _script_refused(capsys, rc, payload, marker)


def test_train_resume_file_refuses_the_payload(tmp_path: Path, marker: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``--resume`` reads OUT.last.pt: a payload planted there is refused like any other file."""
    out = tmp_path / "clf.pt"
    resume = _write(Path(f"{out}.last.pt"), marker, "shaped")
    rc = load_script("train/train_classifier.py").main(
        ["--resume", "--epochs", "1", "--train-length", "8", "--val-length", "8", "--image-size", "32",
         "--no-progress", "--device", "cpu", "-o", str(out)])
    _script_refused(capsys, rc, resume, marker)
    assert not out.exists()


def test_wrap_classifier_weights_refuses_the_payload(payload: Path, marker: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = load_script("train/wrap_classifier.py").main(
        ["torchvision:resnet18", "--weights", str(payload), "--classes", "imagenet", "--activation", "softmax",
         "-o", str(tmp_path / "w.pt")])
    _script_refused(capsys, rc, payload, marker)
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("archive", ["torch.save", "torchscript"])
def test_wrap_classifier_torchscript_file_refuses_the_payload(archive: str, marker: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scripted.pt"
    if archive == "torch.save":
        _write(path, marker, "bare")
    else:
        path.write_bytes(_torchscript_archive(marker))
    rc = load_script("train/wrap_classifier.py").main(
        [str(path), "--classes", "imagenet", "--activation", "softmax", "-o", str(tmp_path / "w.pt")])
    _script_refused(capsys, rc, path, marker)


def test_export_refuses_the_payload(payload: Path, marker: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc = load_script("export/to_onnx.py").main([str(payload), "-o", str(tmp_path / "m.onnx")])
    _script_refused(capsys, rc, payload, marker)
    assert not (tmp_path / "m.onnx").exists()
