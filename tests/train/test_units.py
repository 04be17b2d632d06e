"""Training building blocks checked against independent computations: gradients against
finite differences, the schedule against its formula, samplers, RNG round trips, metrics."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from c3d_extract.device.hardware import cpu_info_from
from c3d_extract.device.precision import resolve_training_precision
from c3d_extract.errors import UsageError
from c3d_extract.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from c3d_extract.train.distributed import ResumableSampler, World, shard_indices
from c3d_extract.train.loop import Trainee, train_one_epoch
from c3d_extract.train.metrics import Tally, confusion, topk_hits
from c3d_extract.train.optim import lr_factor
from c3d_extract.train.options import TrainOptions


class _ScaleOnly:
    """Stands in for a preset: uint8 N x L x H x W x C -> float64 N x C x L x H x W / 255."""

    def normalise(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.permute(0, 4, 1, 2, 3).double() / 255.0


def _tiny_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv3d(3, 2, 2), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(2, 3)).double()


def _batches(seed: int = 5):
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randint(0, 256, (4, 2, 4, 4, 3), generator=generator, dtype=torch.uint8)
    labels = torch.tensor([0, 2, 1, 2])
    return [(clips[:2], labels[:2], torch.arange(2)), (clips[2:], labels[2:], torch.arange(2, 4))]


def _objective(net: nn.Module, batches) -> torch.Tensor:
    """Mean over the batches of each batch's mean cross-entropy, written out by hand."""
    total = torch.zeros((), dtype=torch.float64)
    for clips, labels, _ in batches:
        x = clips.permute(0, 4, 1, 2, 3).double() / 255.0
        logits = net(x)
        log_probabilities = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        total = total - log_probabilities[torch.arange(len(labels)), labels].mean()
    return total / len(batches)


@pytest.fixture
def one_thread():
    # Hundreds of tiny forward passes: threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_accumulated_step_follows_finite_difference_gradients(one_thread):
    """One SGD step (lr 1, no momentum) over two accumulated batches moves every parameter by
    minus the central finite difference of the mean batch loss (float64)."""
    net = _tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = _batches()
    expected = {}
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            gradient = torch.zeros_like(parameter)
            flat, grad_flat = parameter.view(-1), gradient.view(-1)
            for i in range(flat.numel()):
                step = 1e-6
                flat[i] += step
                up = _objective(net, batches)
                flat[i] -= 2 * step
                down = _objective(net, batches)
                flat[i] += step
                grad_flat[i] = (up - down) / (2 * step)
            expected[name] = before[name] - gradient
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainee = Trainee(net, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
                      _ScaleOnly(), torch.device("cpu"), "fp32", accumulate=2)
    steps = []
    tally = train_one_epoch(trainee, batches, batches_done=0, batches_total=2, tally=Tally(),
                            on_step=lambda done, running: steps.append(done))
    assert steps == [2]
    assert tally.count == 4
    for name, parameter in net.named_parameters():
        # Central differences of a smooth float64 function: error ~ h^2 + eps/h ~ 1e-10.
        torch.testing.assert_close(parameter.detach(), expected[name], rtol=0, atol=1e-7)


def test_cosine_schedule_without_warmup_starts_at_full_rate():
    factor = lr_factor("cosine", total_steps=10, warmup_steps=0)
    assert factor(0) == 1.0
    for step in range(10):
        assert factor(step) == pytest.approx(0.5 * (1 + math.cos(math.pi * step / 10)))
    warm = lr_factor("cosine", total_steps=10, warmup_steps=2)
    assert [warm(0), warm(1)] == [0.5, 1.0]
    steps = lr_factor("step", total_steps=8, warmup_steps=0)
    assert [steps(s) for s in (0, 3, 4, 5, 6, 7)] == pytest.approx([1, 1, .1, .1, .01, .01])


def test_resumed_sampler_yields_the_rest_of_the_epoch():
    data = list(range(23))
    for world in (World(0, 1), World(0, 2), World(1, 2)):
        whole = ResumableSampler(data, world, seed=7)
        whole.set_position(3)
        order = list(whole)
        assert len(order) == whole.epoch_length == math.ceil(23 / world.size)
        part = ResumableSampler(data, world, seed=7)
        part.set_position(3, start=5)
        assert list(part) == order[5:] and len(part) == len(order) - 5
    other = ResumableSampler(data, World(0, 1), seed=7)
    other.set_position(4)
    assert list(other) != order or world.size > 1
    assert shard_indices(5, World(1, 2)) == [1, 3]


def test_rng_states_survive_a_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, {"rng": [capture_rng()]})
    first = (torch.rand(4), np.random.rand(3), random.random())
    restore_rng(load_checkpoint(path)["rng"][0])
    again = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    from c3d_extract.errors import StoreError

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match="--overwrite"):
        load_checkpoint(str(path))
    assert load_checkpoint(str(tmp_path / "none.pt")) is None


def test_topk_and_confusion_by_hand():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert topk_hits(scores, labels, 1).tolist() == [True, False, False]
    assert topk_hits(scores, labels, 2).tolist() == [True, True, False]
    assert topk_hits(scores, labels, 5).tolist() == [True, True, True]
    matrix = confusion(labels, scores.argmax(1), 3)
    assert matrix.tolist() == [[0, 0, 1], [1, 1, 0], [0, 0, 0]]


def test_precision_choice():
    cpu = torch.device("cpu")

    def on(*flags):
        return cpu_info_from("test CPU", frozenset(flags))

    assert resolve_training_precision("auto", cpu, on("avx2")) == "fp32"
    assert resolve_training_precision("auto", cpu, on("amx_bf16")) == "fp32"
    assert resolve_training_precision("bf16", cpu, on("avx512_bf16")) == "bf16"
    assert resolve_training_precision("bf16", cpu, on("amx_bf16")) == "bf16"
    with pytest.raises(UsageError, match="no native bf16"):
        resolve_training_precision("bf16", cpu, on("avx2", "avx512f"))
    with pytest.raises(UsageError, match="CUDA"):
        resolve_training_precision("fp16", cpu, on())


def test_options_are_checked():
    base = dict(data_root="/d", run_dir="/r", dataset="ucf101", arch="r2plus1d_18")
    with pytest.raises(UsageError, match="--epochs"):
        TrainOptions(**base, epochs=0)
    with pytest.raises(UsageError, match="--freeze-backbone needs --init"):
        TrainOptions(**base, freeze_backbone=True)
    with pytest.raises(UsageError, match="--dataset"):
        TrainOptions(**{**base, "dataset": "imagenet"})
    options = TrainOptions(**base, optimizer="adam")
    assert (options.learning_rate, options.decay) == (1e-4, 0.0)
    key = options.resume_key(2)
    assert key["world_size"] == 2 and "quiet" not in key and "workers" not in key
