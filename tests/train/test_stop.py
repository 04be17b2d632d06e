"""c3d-train stopped by a signal: Ctrl-C (SIGINT to the whole process group, loader workers
included) or SIGTERM in the middle of an epoch finishes the step in progress, writes a
checkpoint even with --checkpoint-every 0, exits 130 with one line; the rerun resumes from
that step and ends with the weights of an uninterrupted run, bit for bit."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.support.paths import ROOT
from tests.support.train_data import write_tiny_ucf101
from tests.support.train_support import identical, model_tensors, run_tiny_train, tiny_train_command


@pytest.fixture(scope="module")
def tiny_ucf(tmp_path_factory):
    return write_tiny_ucf101(tmp_path_factory.mktemp("data"), clips=2)


def _args(data, run_dir, *extra):
    # 12 training videos in batches of 3: 4 steps per epoch.
    return [str(data.root), "-o", str(run_dir), "--dataset", "ucf101", "--arch", "tiny3d",
            "--clip-len", "4", "--crop-size", "32", "--batch-size", "3", "--epochs", "2",
            "--optimizer", "adam", "--lr", "0.01", "--seed", "3", "--deterministic",
            "--val-fraction", "0.3", *extra]


@pytest.fixture(scope="module")
def reference(tiny_ucf, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    result = run_tiny_train(_args(tiny_ucf, run_dir, "--workers", "0"))
    assert result.returncode == 0, result.stderr
    return run_dir, result


def _interrupt_after_first_batch(args, how: str, when: str = "train 1/2: 1/4 batches"
                                 ) -> subprocess.CompletedProcess:
    """Start a run, signal it as soon as a line starts with ``when``, wait for it."""
    process = subprocess.Popen(tiny_train_command(args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               start_new_session=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith(when):
                if how == "terminal":  # what a terminal's Ctrl-C does: the whole group
                    os.killpg(process.pid, signal.SIGINT)
                else:
                    process.send_signal(signal.SIGTERM)
                break
        stdout, rest = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                       "".join(lines) + rest)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["terminal", "sigterm"])
def test_signal_mid_epoch_checkpoints_and_resumes_bit_identically(reference, tiny_ucf,
                                                                  tmp_path, how):
    reference_dir, reference_result = reference
    run_dir = tmp_path / "stopped"
    args = _args(tiny_ucf, run_dir, "--workers", "1" if how == "terminal" else "0")

    stopped = _interrupt_after_first_batch(args, how)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    match = re.match(r"interrupted: stopped after step (\d+) \(epoch 1, batch \d+\); .*"
                     r"checkpoint\.pt keeps the run; rerun the same command", last)
    assert match, stopped.stderr
    step = int(match.group(1))
    assert 1 <= step < 4  # inside epoch 1, not at its end
    assert (run_dir / "checkpoint.pt").exists()
    assert not (run_dir / "model.safetensors").exists()

    final = run_tiny_train(args)
    assert final.returncode == 0, final.stderr
    assert re.search(rf"^resuming from step {step} \(epoch 1, batch {step} of 4\)",
                     final.stderr, re.M), final.stderr
    difference = identical(model_tensors(str(reference_dir / "model.safetensors")),
                           model_tensors(str(run_dir / "model.safetensors")))
    assert difference is None, difference


def test_second_signal_stops_at_once_but_an_echo_of_the_first_does_not(monkeypatch):
    from c3d_extract.cli import train as train_cli
    from c3d_extract.train.stopping import StopRequest

    stop = StopRequest()
    previous = train_cli._stop_on_signals(stop)
    try:
        handler = signal.getsignal(signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) is handler
        handler(signal.SIGINT, None)
        assert stop.requested and stop.reason == "SIGINT"
        handler(signal.SIGTERM, None)  # torchrun passing the same Ctrl-C on: no effect
        monkeypatch.setattr(train_cli, "REPEAT_WINDOW", 0.0)
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def test_progress_lines_without_a_terminal_never_begin_with_epoch(capsys):
    from c3d_extract.cli.train import StepProgress
    from c3d_extract.train.metrics import Tally

    progress = StepProgress(quiet=False, tty=False, every=20)
    progress.epoch_started(2, 5, 10, 45)  # resumed after 10 batches
    for done in range(11, 46):
        progress.batch_done(done, Tally(loss_sum=2.0 * done, count=done), 4, 0.5)
    progress.phase_ended()
    progress.evaluation_started("test", 3)
    for _ in range(3):
        progress.evaluated(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["train 2/5: 10/45 batches",
                     "train 2/5: 11/45 batches, loss 2.0000, 8.0 clips/s",
                     "train 2/5: 20/45 batches, loss 2.0000, 8.0 clips/s",
                     "train 2/5: 40/45 batches, loss 2.0000, 8.0 clips/s",
                     "train 2/5: 45/45 batches, loss 2.0000, 8.0 clips/s",
                     "test: 0/3 videos", "test: 1/3 videos", "test: 3/3 videos"]
    quiet = StepProgress(quiet=True, tty=False)
    quiet.epoch_started(1, 1, 0, 3)
    quiet.batch_done(1, Tally(loss_sum=1.0, count=1), 1, 0.1)
    assert capsys.readouterr().err == ""


_TORCHRUN_LAUNCH = ("import sys; sys.path.insert(0, {root!r}); "
                    "from tests.support.train_support import register_tiny; register_tiny(); "
                    "from c3d_extract.cli.train import main; sys.argv[0] = 'c3d-train'; main()")


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step(tiny_ucf, tmp_path):
    import sys

    launcher = tmp_path / "launch.py"
    launcher.write_text(_TORCHRUN_LAUNCH.format(root=str(ROOT)) + "\n")
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(launcher), *_args(tiny_ucf, run_dir),
               "--batch-size", "2", "--workers", "1", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, start_new_session=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith("train 1/2: 1/"):
                os.killpg(process.pid, signal.SIGINT)  # the terminal: torchrun and ranks
                break
        _, rest = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = "".join(lines) + rest
    stops = re.findall(r"^interrupted: stopped after step (\d+) ", stderr, re.M)
    assert len(stops) == 1, stderr  # rank 0 speaks for both
    assert "interrupted at once" not in stderr  # torchrun passing the signal on is no 2nd
    step = int(stops[0])
    assert (run_dir / "checkpoint.pt").exists()
    final = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"resuming from step {step} (epoch 1, batch {step} of " in final.stderr
    assert (run_dir / "model.safetensors").exists()


def test_a_second_ctrl_c_while_a_checkpoint_is_written_keeps_the_last_one(tmp_path,
                                                                          monkeypatch):
    import torch

    from c3d_extract.train import checkpoint as checkpoints

    path = str(tmp_path / "checkpoint.pt")
    checkpoints.save_checkpoint(path, {"global_step": 4, "weights": torch.ones(3)})
    real_save = torch.save

    def interrupted_save(payload, target):
        real_save(payload, target)
        with open(target, "r+b") as handle:  # half written when the signal comes
            handle.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(path, {"global_step": 6, "weights": torch.zeros(3)})
    monkeypatch.undo()
    kept = checkpoints.load_checkpoint(path)
    assert kept["global_step"] == 4 and torch.equal(kept["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.mark.slow
def test_a_signal_before_the_first_step_stops_after_it_even_at_an_epoch_end(tiny_ucf,
                                                                            tmp_path):
    # One batch of 12 per epoch: the first step is also the epoch's last.
    args = _args(tiny_ucf, tmp_path / "stopped", "--batch-size", "12", "--workers", "0")
    stopped = _interrupt_after_first_batch(args, "sigterm", when="training tiny3d on")
    stderr = stopped.stderr  # no step has started yet when it is signalled
    assert stopped.returncode == 130, stderr
    assert "interrupted: stopped after step 1 (epoch 1, batch 1); " in stderr
    final = run_tiny_train(args)
    assert final.returncode == 0, final.stderr
    assert "resuming from step 1 (epoch 1, batch 1 of 1)" in final.stderr
    assert "epoch 1/2 train loss" in final.stderr  # the epoch's end comes after the resume
    reference = run_tiny_train(_args(tiny_ucf, tmp_path / "reference", "--batch-size", "12",
                                     "--workers", "0"))
    assert reference.returncode == 0, reference.stderr
    difference = identical(model_tensors(str(tmp_path / "reference" / "model.safetensors")),
                           model_tensors(str(tmp_path / "stopped" / "model.safetensors")))
    assert difference is None, difference
