"""Training as a torchrun job: shards, gradient averaging, resume on another world size, the
scripts under ``torchrun`` (gloo on the loopback interface), and failure behaviour.

Parity is exact (to float rounding) where nothing but the data split differs between the
runs (the fit loop's tests). The bundled networks have BatchNorm, which in training mode
normalises each rank's batch with its own statistics (CPU has no SyncBatchNorm), and the
classifier has dropout, whose draws differ per rank; the scripts are therefore compared
with a stated tolerance: train and validation loss within 1 % after the same steps.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wysiwyc.data import make_loader
from wysiwyc.distributed import (DistContext, ShardSampler, finish, init_distributed, reduce_weighted_means,
                                 shutdown)
from wysiwyc.errors import UserError
from wysiwyc.training import FitConfig, Task, Trainer
from wysiwyc.training.fit import resolve_amp, run_scale

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- shards
@pytest.mark.parametrize("world", [2, 3])
def test_shards_of_a_step_are_the_one_process_batch(world: int) -> None:
    n, b = 50, 4
    one = list(ShardSampler(n, 0, 1, shuffle=True, seed=3))
    shards = [list(ShardSampler(n, r, world, shuffle=True, seed=3)) for r in range(world)]
    assert all(len(s) == n // world for s in shards)
    for step in range(len(shards[0]) // b):
        together = sorted(i for s in shards for i in s[step * b:(step + 1) * b])
        assert together == sorted(one[step * b * world:(step + 1) * b * world])


def test_shard_order_depends_on_seed_and_epoch_only() -> None:
    a, b = ShardSampler(40, 1, 2, seed=5), ShardSampler(40, 1, 2, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b) and len(set(a)) == 20


def test_validation_shards_cover_every_sample_once() -> None:
    shards = [list(ShardSampler(11, r, 3, shuffle=False)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert [len(s) for s in shards] == [len(ShardSampler(11, r, 3, shuffle=False)) for r in range(3)] == [4, 4, 3]


def test_weighted_means_in_a_world_of_one() -> None:
    assert reduce_weighted_means({"loss": 6.0, "iou": 3.0}, 4) == {"loss": 1.5, "iou": 0.75}


# ---------------------------------------------------------------- scale and precision
def test_run_scale_global_batch_and_lr() -> None:
    ctx = DistContext(world_size=4, rank=1, backend="gloo")
    s = run_scale(ctx, 16, 2, 1e-3, "linear")
    assert s.global_batch == 128 and s.lr == pytest.approx(8e-3)
    assert run_scale(ctx, 16, 2, 1e-3, "sqrt").lr == pytest.approx(1e-3 * math.sqrt(8))
    assert run_scale(ctx, 16, 2, 1e-3).lr == 1e-3
    assert "global batch 128" in s.describe() and s.to_dict()["world_size"] == 4
    with pytest.raises(UserError, match="accumulate"):
        run_scale(ctx, 16, 0, 1e-3)


def test_amp_modes() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None and resolve_amp("auto", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(UserError, match="CUDA"):
        resolve_amp("fp16", cpu)


def test_world_of_one_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)


# ---------------------------------------------------------------- the fit loop on N processes
class _Linear(Task):
    """Least squares with a linear model: no BatchNorm, no dropout, so a world of W at batch b
    and one process at batch W·b take the same steps (up to float summation order)."""

    def __init__(self, stop_at_epoch: int | None = None) -> None:
        torch.manual_seed(11)
        self.net = nn.Linear(3, 2)
        self.modules = {"net": self.net}
        self.stop_at_epoch, self.steps = stop_at_epoch, 0

    def training_step(self, batch, device):  # noqa: ANN001, ANN201
        self.steps += 1
        if self.stop_at_epoch is not None and self.steps > (self.stop_at_epoch - 1) * self.steps_per_epoch:
            raise _Stop
        x, y = (t.to(device) for t in batch)
        loss = nn.functional.mse_loss(self.net(x), y)
        return loss, {"mse": float(loss.detach())}

    @torch.no_grad()
    def evaluate(self, loader, device):  # noqa: ANN001, ANN201
        sums, n = {"val_loss": 0.0}, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            sums["val_loss"] += float(nn.functional.mse_loss(self.net(x), y, reduction="sum")) / 2
            n += len(x)
        return reduce_weighted_means(sums, n)


class _Stop(Exception):
    pass


def _dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    return TensorDataset(x, x @ torch.tensor([[1.0, 0.5], [-2.0, 0.0], [0.5, 1.0]]))


def _fit(ctx: DistContext, batch: int, accumulate: int, epochs: int, resume: Path | None,
         stop_at_epoch: int | None = None) -> tuple[dict, list]:
    ds = _dataset()
    task = _Linear(stop_at_epoch)
    cfg = FitConfig(epochs=epochs, lr=0.05, cosine=True, patience=epochs, progress=False, seed=4, accumulate=accumulate)
    train = make_loader(ds, batch, shuffle=True, shard=ctx, seed=4)
    task.steps_per_epoch = len(train) // accumulate
    trainer = Trainer(task, train, make_loader(ds, 7, shard=ctx), cfg, ctx.device, resume_path=resume,
                      resume=resume is not None and resume.exists(), dist=ctx)
    result = trainer.fit()
    return {k: v.clone() for k, v in task.net.state_dict().items()}, result.history


def _worker(rank: int, world: int, port: int, out: str, batch: int, epochs: int, resume: str | None,
            stop_at_epoch: int | None, accumulate: int) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_distributed("cpu", timeout_minutes=2)
    try:
        state, history = _fit(ctx, batch, accumulate, epochs, Path(resume) if resume else None, stop_at_epoch)
        if ctx.is_main:
            torch.save({"state": state, "history": history}, out)
    except _Stop:
        pass
    except BaseException:
        shutdown()  # leave the group without waiting for the other rank
        raise
    # every rank ends together (rank 0 may still be saving), as the training scripts do
    finish()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp: Path, world: int, batch: int, epochs: int, resume: Path | None = None,
           stop_at_epoch: int | None = None, accumulate: int = 1) -> dict:
    out = tmp / f"w{world}a{accumulate}.pt"
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(out), batch, epochs,
                                               str(resume) if resume else None, stop_at_epoch, accumulate),
                                nprocs=world)
    return torch.load(out, weights_only=True) if out.exists() else {}


def _close(a: dict, b: dict, tol: float = 1e-6) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=tol, rtol=tol)


@pytest.mark.slow
def test_two_ranks_match_one_process_at_the_same_global_batch(tmp_path: Path) -> None:
    one = DistContext()
    ref_state, ref_hist = _fit(one, 8, 1, 3, None)
    acc_state, acc_hist = _fit(one, 4, 2, 3, None)  # accumulation: the same global batch
    two = _spawn(tmp_path, 2, 4, 3)
    two_acc = _spawn(tmp_path, 2, 2, 3, accumulate=2)  # DDP's no_sync on the first micro-batch
    _close(ref_state, acc_state)
    _close(ref_state, two["state"])
    _close(ref_state, two_acc["state"])
    for h1, h2 in zip(ref_hist, two["history"]):
        assert h2["val_loss"] == pytest.approx(h1["val_loss"], rel=1e-6)
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-6)
    assert ref_hist[-1]["val_loss"] < 0.8 * ref_hist[0]["val_loss"]  # it does learn


@pytest.mark.slow
def test_resume_on_another_world_size_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    ref_state, ref_hist = _fit(DistContext(), 8, 1, 4, None)
    resume = tmp_path / "run.last.pt"
    _spawn(tmp_path, 2, 4, 4, resume=resume, stop_at_epoch=3)  # two ranks stop in epoch 3
    assert torch.load(resume, weights_only=True)["world_size"] == 2
    state, hist = _fit(DistContext(), 8, 1, 4, resume)  # one process finishes the job
    assert not resume.exists()
    _close(ref_state, state)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["val_loss"] == pytest.approx(ref_hist[-1]["val_loss"], rel=1e-6)


# ---------------------------------------------------------------- the scripts under torchrun
def _run(args: list[str], nproc: int | None, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                             if nproc else []), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


CLASSIFIER_ARGS = ["train/train_classifier.py", "--data", "shapes", "--epochs", "1", "--train-length", "256",
                   "--val-length", "64", "--test-length", "32", "--no-progress"]


@pytest.fixture(scope="module")
def torchrun_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-process classifier run: the issue's command, at a tiny size."""
    out = tmp_path_factory.mktemp("ddp") / "cls.pt"
    r = _run([*CLASSIFIER_ARGS, "-o", str(out)], 2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("epoch 1/1") == 1  # rank 0 alone prints
    return out


@pytest.mark.slow
def test_torchrun_classifier_records_its_scale_and_exports(torchrun_classifier: Path, tmp_path: Path) -> None:
    ck = _ckpt(torchrun_classifier)
    assert ck["train"]["scale"]["world_size"] == 2 and ck["train"]["scale"]["global_batch"] == 128
    m = ck["metrics"]  # 256 images / global batch 128 = 2 steps, counted over both ranks
    assert m["samples_per_s"] == pytest.approx(128 * m["steps_per_s"], rel=0.01)
    assert not Path(str(torchrun_classifier) + ".last.pt").exists()
    r = _run(["export/to_onnx.py", str(torchrun_classifier), "-o", str(tmp_path / "c.onnx")], None)
    assert r.returncode == 0 and (tmp_path / "c.onnx").is_file(), r.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_classifier_matches_one_process_within_tolerance(torchrun_classifier: Path, tmp_path: Path) -> None:
    """Per-rank BatchNorm statistics and per-rank dropout draws move the losses by < 1 %."""
    r = _run([*CLASSIFIER_ARGS, "--batch-size", "128", "-o", str(tmp_path / "one.pt")], None)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = _ckpt(tmp_path / "one.pt"), _ckpt(torchrun_classifier)
    for key in ("train_loss", "val_loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=0.01), key


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train/train_explainer.py", "train/train_mask_predictor.py"])
def test_torchrun_heads_match_one_process_within_batchnorm_tolerance(
        script: str, torchrun_classifier: Path, tmp_path: Path) -> None:
    """Trained heads have BatchNorm: per-rank batch statistics move the loss by < 1 %."""
    common = [script, "--classifier", str(torchrun_classifier), "--epochs", "1", "--train-length", "64",
              "--val-length", "32", "--no-progress", "--lr", "1e-3"]
    r2 = _run([*common, "--batch-size", "8", "-o", str(tmp_path / "two.pt")], 2)
    r1 = _run([*common, "--batch-size", "16", "-o", str(tmp_path / "one.pt")], None)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr + r2.stderr)[-2000:]
    one, two = _ckpt(tmp_path / "one.pt"), _ckpt(tmp_path / "two.pt")
    assert two["train"]["scale"]["world_size"] == 2 and one["train"]["scale"]["world_size"] == 1
    for key in ("train_loss", "val_loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=0.01), key
    r = _run(["export/to_onnx.py", str(tmp_path / "two.pt"), "-o", str(tmp_path / "two.onnx")], None)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_bad_flag_fails_on_every_rank_with_one_line(tmp_path: Path) -> None:
    r = _run(["train/train_classifier.py", "--accumulate", "0", "-o", str(tmp_path / "x.pt")], 2, timeout=120)
    assert r.returncode != 0
    assert r.stderr.count("error: --accumulate must be >= 1, got 0") == 2
    # torchrun's report: the first rank to fail exited 2 (the other may be stopped by torchrun
    # before it exits on its own, after printing the same line)
    assert "exitcode  : 2" in r.stderr
    assert r.stderr.count("Traceback") <= 1  # the launcher's own ChildFailedError, none from the ranks


@pytest.mark.slow
def test_torchrun_a_dying_rank_ends_the_job(tmp_path: Path) -> None:
    """Rank 1 dies in its second step; the job must end (no hang) and say which rank failed."""
    wrapper = tmp_path / "dies.py"
    wrapper.write_text(
        "import os, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'train')!r}, {str(ROOT / 'src')!r}]\n"
        "from wysiwyc.training import fit\n"
        "step = fit.Trainer._optimisation_step\n"
        "def dying(self, batches, epoch, s):\n"
        "    if s == 1 and os.environ['RANK'] == '1':\n"
        "        os._exit(3)\n"
        "    return step(self, batches, epoch, s)\n"
        "fit.Trainer._optimisation_step = dying\n"
        "import train_classifier\n"
        "sys.exit(train_classifier.main())\n")
    r = _run([str(wrapper), "--data", "shapes", "--epochs", "1", "--train-length", "256", "--val-length", "32",
              "--batch-size", "32", "--no-progress", "-o", str(tmp_path / "x.pt")], 2, timeout=180)
    assert r.returncode != 0
    assert "exitcode  : 3" in r.stderr or "exitcode: 3" in r.stderr.replace(" ", ""), r.stderr[-2000:]
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_bf16_autocast_and_accumulation_train_on_cpu(tmp_path: Path) -> None:
    ds = _dataset()
    task = _Linear()
    ctx = DistContext()
    cfg = FitConfig(epochs=2, lr=0.05, patience=2, progress=False, amp="bf16", accumulate=2)
    out = Trainer(task, make_loader(ds, 4, shuffle=True, shard=ctx), make_loader(ds, 16, shard=ctx), cfg,
                  ctx.device, dist=ctx).fit()
    assert all(math.isfinite(h["train_loss"]) for h in out.history)
    assert out.history[-1]["val_loss"] < out.history[0]["val_loss"]
    json.dumps(out.history)  # plain floats


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_mixed_precision_on_cuda_trains(amp: str) -> None:
    """bf16 autocast (``auto`` on GPUs that support it) and fp16 with the gradient scaler."""
    ds = _dataset()
    task = _Linear()
    ctx = DistContext(device=torch.device("cuda"))
    cfg = FitConfig(epochs=3, lr=0.05, patience=3, progress=False, amp=amp)
    trainer = Trainer(task, make_loader(ds, 8, shuffle=True, shard=ctx), make_loader(ds, 16, shard=ctx), cfg,
                      ctx.device, dist=ctx)
    assert (trainer.scaler is not None) == (trainer.amp_dtype == torch.float16)
    out = trainer.fit()
    assert out.history[-1]["val_loss"] < out.history[0]["val_loss"]


@pytest.mark.slow
def test_two_nodes_over_c10d_rendezvous(tmp_path: Path) -> None:
    """The multi-node command line: two torchrun agents (one process each) meet at a c10d
    rendezvous on the loopback address and train as a world of two."""
    port = _free_port()
    out = tmp_path / "cls.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "wysiwyc-test",
           *CLASSIFIER_ARGS, "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        results = [n.communicate(timeout=240) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(r[1][-1500:] for r in results)
    assert _ckpt(out)["train"]["scale"]["world_size"] == 2
