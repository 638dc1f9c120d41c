"""The training engine: BPTT over T steps, per-step evaluation, checkpoints, exact resume.

One call of :func:`train` runs a recipe end to end and returns the report that is also written
to ``out_dir/report.json``. The state after every epoch is checkpointed atomically to
``out_dir/last.pt``; ``resume=True`` continues from it and ends with the same weights, bit for
bit on CPU, as a run that was never interrupted (data order and augmentation depend only on the
seed and the epoch; the RNG state is restored for everything else).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..augment_spec import EventAugmentSpec
from ..causal import is_causal
from ..config import Recipe, recipe_from_dict
from ..data import DatasetSplits, load_dataset
from ..errors import CheckpointError, ConfigError, FewstepError, RunExistsError
from ..models import build_model
from ..neurons import reset_net, spiking_neurons
from ..progress import progress_bars
from . import distributed as dist_utils
from .checkpoint import latest_good, save_checkpoint
from .data_feed import DeviceFeed
from .guard import divergence_problem
from .losses import cumulative_accuracy, mean_output_ce, tet_loss

CHECKPOINT_NAME = "last.pt"
REPORT_NAME = "report.json"
#: The files that hold a run's results: a new run into the folder must resume them or, told to
#: overwrite, removes them before its first epoch (so none of them outlives the run it described).
RUN_FILES = (CHECKPOINT_NAME, CHECKPOINT_NAME + ".prev", REPORT_NAME, "eval_report.json")


class TrainingDiverged(FewstepError, FloatingPointError):
    """The loss or the weights became NaN/inf; the last good checkpoint is kept."""


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device", "CUDA was requested but torch sees no GPU (install a CUDA build of torch)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError("--device", f"must be cpu, cuda or cuda:N, got {device!r}")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def prepare_data(recipe: Recipe, data_root: str | Path | None) -> DatasetSplits:
    d = recipe.data
    options = dict(d.options)
    splits = load_dataset(d.dataset, data_root, **options)
    if d.train_limit:
        splits.train = splits.train.subset(d.train_limit)
    if d.test_limit:
        splits.test = splits.test.subset(d.test_limit)
    if d.val_size:
        splits.hold_out_validation(d.val_size, d.val_seed)
    return splits


def make_model(recipe: Recipe, splits: DatasetSplits) -> nn.Module:
    m = recipe.model
    timesteps = splits.train.timesteps or m.timesteps
    if splits.train.is_sequence and timesteps != m.timesteps:
        raise ConfigError("model.timesteps", f"the dataset gives {timesteps} steps per sample but the recipe asks "
                          f"for {m.timesteps}; set both to the same value")
    try:
        return build_model(m.name, num_classes=splits.num_classes, input_shape=splits.train.sample_shape,
                           timesteps=timesteps, neuron=recipe.neuron, **m.options)
    except TypeError as exc:
        raise ConfigError("model.options", f"model {m.name!r} rejected its options: {exc}") from None


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch norm in ``model`` (1-d, 2-d, 3-d and fewstep's own)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_biases(model: nn.Module) -> list[nn.Parameter]:
    """The bias of every affine batch norm in ``model``."""
    return [m.bias for m in batchnorms(model) if isinstance(m.bias, nn.Parameter)]


def freeze_batchnorm_weights(model: nn.Module) -> int:
    """Stop training the scale of every affine batch norm in ``model`` (airbench's treatment: a BN
    after a conv then only shifts); returns how many were frozen."""
    scales = [m.weight for m in batchnorms(model) if isinstance(m.weight, nn.Parameter)]
    for w in scales:
        w.requires_grad_(False)
    return len(scales)


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> int:
    """Give every batch norm in ``model`` this running-average ``momentum``; returns how many."""
    norms = batchnorms(model)
    for m in norms:
        m.momentum = momentum
    return len(norms)


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters, in groups: weights with ``train.weight_decay``;
    BN, biases and neuron scalars without; with ``train.bn_bias_lr_scale != 1`` the BN biases in a
    group of their own whose ``lr_scale`` multiplies every learning rate :func:`lr_at` sets."""
    t = recipe.train
    bn_bias_ids = {id(p) for p in batchnorm_biases(model)} if t.bn_bias_lr_scale != 1.0 else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    bn_bias: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in bn_bias_ids:
            bn_bias.append(p)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN, biases, neuron scalars
    groups = [{"params": decay, "weight_decay": t.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if bn_bias_ids:  # only then: the groups of checkpoints from recipes without it stay as they were
        groups.append({"params": bn_bias, "weight_decay": 0.0, "lr_scale": t.bn_bias_lr_scale})
    # One fused kernel for all parameters where PyTorch has it (CPU and CUDA): on the CPU the
    # per-tensor loop of AdamW cost more than a tenth of a small network's training step.
    params = decay + no_decay + bn_bias
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    cls: type[torch.optim.Optimizer]
    kw: dict[str, Any]
    if t.optimizer == "sgd":
        cls, kw = torch.optim.SGD, {"momentum": t.momentum, "nesterov": t.nesterov and t.momentum > 0}
    else:
        # With weight_decay = 0 AdamW is Adam; amsgrad as Datta and Beerel fine-tune.
        cls, kw = torch.optim.AdamW, {"amsgrad": t.amsgrad}
    if fused:
        try:
            return cls(groups, lr=t.lr, fused=True, **kw)
        except (TypeError, RuntimeError, ValueError):  # an older PyTorch, or a device it does not fuse on
            pass
    return cls(groups, lr=t.lr, **kw)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group ``lr`` times its ``lr_scale`` (1 where a group has none, e.g. the
    groups of a checkpoint saved before the key existed)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def lr_at(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step``: linear warm-up, then cosine to 0 or constant."""
    t = recipe.train
    warm = t.warmup_epochs * steps_per_epoch
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "constant":
        return t.lr
    progress = (step - warm) / max(1, total_steps - warm)
    return t.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_loss(recipe: Recipe, model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task loss (CE on the mean output, or TET), plus the regularizer if the recipe sets one.

    A regularizer sees every spiking layer's spikes and membrane potential at every step: the
    neurons are switched to ``record = True`` and read after each forward pass. The membrane is
    the one the regularizer asks for (its ``membrane`` attribute): after the reset (``u_t``,
    RCS's default, as in the authors' code) or before it (``h_t``).
    """
    t = recipe.train
    if t.loss == "tet":
        task = lambda out, y: tet_loss(out, y, t.tet_lambda, t.tet_phi, t.label_smoothing)  # noqa: E731
    else:
        task = lambda out, y: mean_output_ce(out, y, t.label_smoothing)  # noqa: E731
    if t.regularizer == "none" or t.reg_alpha == 0:
        return task
    from ..regularizers import make_regularizer

    reg = make_regularizer(t.regularizer, **t.reg_options)
    neurons = spiking_neurons(model)
    for _, n in neurons:
        n.record = True

    post_reset = getattr(reg, "membrane", "pre_reset") == "post_reset"

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        records = [(name, n.last_spikes, n.membrane_after_reset() if post_reset else n.last_membrane, n.threshold)
                   for name, n in neurons]
        return task(out, y) + t.reg_alpha * reg(records, out, y)

    return loss


def load_initial_weights(recipe: Recipe, model: nn.Module) -> None:
    """Load ``train.init_checkpoint`` (a fewstep checkpoint or a bare state dict) into ``model``."""
    from .checkpoint import load_checkpoint

    state = load_checkpoint(recipe.train.init_checkpoint)
    weights = state.get("model", state)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{recipe.train.init_checkpoint}: does not fit model {recipe.model.name!r}: {exc}") from None


def requires_init_checkpoint(recipe: Recipe) -> bool:
    """Whether ``recipe`` must start from ``train.init_checkpoint``: ``train.requires_init_checkpoint``
    when the recipe sets it, else true for the ``*_converted`` models (fine-tuned conversions: from
    random weights they train as an ordinary, worse SNN, and the run would look like a success)."""
    if recipe.train.requires_init_checkpoint is not None:
        return recipe.train.requires_init_checkpoint
    from ..models.dnn import CONVERTED_NAMES

    return recipe.model.name in CONVERTED_NAMES.values()


def check_init_checkpoint(recipe: Recipe) -> None:
    """Stop before any work when the recipe needs ``train.init_checkpoint`` and it is empty or
    names no file (the weights are loaded later, once the data has given the model's shape)."""
    path = recipe.train.init_checkpoint
    if not path and requires_init_checkpoint(recipe):
        raise ConfigError("train.init_checkpoint", f"recipe {recipe.name!r} fine-tunes {recipe.model.name!r} from a "
                          "checkpoint and none is set; convert a trained DNN with `fewstep convert` and pass "
                          "--set train.init_checkpoint=PATH (e.g. its converted-dist-t2.pt), or --set "
                          "train.requires_init_checkpoint=false to train from random weights")
    if path and not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint (train.init_checkpoint of recipe {recipe.name!r})")


def previous_run_files(out_dir: str | Path) -> list[Path]:
    """The files of an earlier run in ``out_dir`` (see :data:`RUN_FILES`)."""
    out = Path(out_dir)
    return [out / name for name in RUN_FILES if (out / name).exists()]


def check_output_folder(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one: a finished ``last.pt`` and
    ``report.json`` (or an interrupted run's ``last.pt``) are never replaced silently.
    ``resume`` continues that run; ``overwrite`` replaces it."""
    if resume and overwrite:
        raise FewstepError("--resume and --overwrite exclude each other: continue the run in the folder or "
                           "replace it, not both")
    if resume or overwrite:
        return
    out = Path(out_dir)
    found = previous_run_files(out)
    if not found:
        return
    names = ", ".join(p.name for p in found)
    if (out / REPORT_NAME).exists():
        raise RunExistsError(f"{out} already holds a finished run ({names}); pass --overwrite to replace it or "
                             "choose another --out (--resume only re-scores it: resuming needs the same recipe and "
                             "--set options, more train.epochs included)")
    raise RunExistsError(f"{out} holds an unfinished run ({names}); pass --resume to continue it, --overwrite to "
                         "start over, or choose another --out")


def remove_previous_run(out_dir: str | Path) -> None:
    """Delete an earlier run's :data:`RUN_FILES` (``overwrite``): a new run interrupted before its
    first checkpoint then leaves no report or checkpoint of the run it replaced."""
    for path in previous_run_files(out_dir):
        path.unlink(missing_ok=True)


def autocast_for(recipe: Recipe, device: torch.device) -> contextlib.AbstractContextManager:
    amp = recipe.train.amp
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def evaluate(model: nn.Module, feed: DeviceFeed, autocast: contextlib.AbstractContextManager | None = None,
             world: int = 1, flip: bool = False) -> list[float]:
    """Accuracy at every step t = 1..T (prediction from the mean of the first t outputs).

    ``flip``: score the mean logits of each static image and its horizontal mirror (test-time
    augmentation; event sequences are scored as they are)."""
    was_training = model.training
    model.eval()
    correct: torch.Tensor | None = None
    total = torch.zeros((), dtype=torch.long, device=feed.device)
    for x, y in feed.epoch(0):
        with autocast or contextlib.nullcontext():
            out = model(x)
            reset_net(model)
            if flip and not feed.ds.is_sequence:
                out = (out + model(x.flip(-1))) / 2
        reset_net(model)
        counts = cumulative_accuracy(out, y)
        correct = counts if correct is None else correct + counts
        total += len(y)
    model.train(was_training)
    if correct is None:
        raise FewstepError("the evaluation set is empty")
    if world > 1:
        correct, total = dist_utils.all_reduce_sum(correct), dist_utils.all_reduce_sum(total)
    return (correct.double() / total.double()).tolist()


@dataclass
class RunContext:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: What a fewstep training checkpoint holds (written by :func:`train` after every epoch) and the
#: types :func:`train` needs when it resumes from one.
TRAINING_STATE_KEYS: dict[str, tuple[type, ...]] = {
    "recipe": (dict,), "model": (dict,), "optimizer": (dict,), "epoch": (int,), "history": (list,),
    "train_seconds": (int, float), "rng_cpu": (torch.Tensor,),
}


def check_training_state(state: Any, path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless ``state`` is a fewstep training checkpoint."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a fewstep training checkpoint (a {type(state).__name__}, not a dict)")
    missing = [k for k in TRAINING_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a fewstep training checkpoint (no {', '.join(missing)}); "
                              "resume only from the last.pt a fewstep training run wrote")
    for key, types in TRAINING_STATE_KEYS.items():
        value = state[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise CheckpointError(f"{path}: not a fewstep training checkpoint ({key!r} is a {type(value).__name__}, "
                                  f"expected {' or '.join(t.__name__ for t in types)})")
    if state["epoch"] < 0 or len(state["history"]) != state["epoch"] or not all(
            isinstance(h, dict) for h in state["history"]):
        raise CheckpointError(f"{path}: not a fewstep training checkpoint (epoch {state['epoch']} with a history "
                              f"of {len(state['history'])} entries)")
    if not math.isfinite(state["train_seconds"]):
        raise CheckpointError(f"{path}: not a fewstep training checkpoint (train_seconds is {state['train_seconds']})")
    if "rng_cuda" in state and not isinstance(state["rng_cuda"], torch.Tensor):
        raise CheckpointError(f"{path}: not a fewstep training checkpoint ('rng_cuda' is a "
                              f"{type(state['rng_cuda']).__name__}, expected Tensor)")


def train(recipe: Recipe, out_dir: str | Path, *, device: str | None = "auto", data_root: str | Path | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True, stop_after_epoch: int | None = None,
          log: Callable[[str], None] | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Train ``recipe``; writes checkpoints, ``report.json`` and plots into ``out_dir``.

    A folder that already holds a run (``last.pt``, ``report.json``) is refused with
    :class:`~fewstep.errors.RunExistsError` unless ``resume`` (continue it) or ``overwrite``
    (replace it: its files are removed once data and model are ready, before the first epoch).
    A recipe that needs ``train.init_checkpoint`` (see :func:`requires_init_checkpoint`) and has
    none is refused before any work.

    ``callbacks`` are objects with optional methods ``on_epoch_end(epoch_record, model, out_dir)``
    and ``on_train_end(report, model, out_dir)`` (called on rank 0 only). ``train.tensorboard``
    adds :class:`fewstep.tblog.TensorBoardCallback`.
    ``stop_after_epoch`` ends the run early (after that many epochs in total) as an interrupted run
    would, without writing the final report; used to test resuming.

    The steps, in order: check the folder and the recipe, start the process group, set up data,
    model and optimizer (:func:`set_up_run`), resume (:func:`resume_run`), then per epoch train
    (:func:`train_one_epoch`), check for divergence, evaluate and checkpoint
    (:func:`finish_epoch`), and at the end score the test split and write the report
    (:func:`finish_run`).
    """
    out = Path(out_dir)
    check_output_folder(out, resume, overwrite)
    check_init_checkpoint(recipe)
    ctx, log = start_run(out, device, log or (lambda msg: print(msg, flush=True)))  # flushed: piped logs stay current
    seed_everything(recipe.train.seed)
    run = set_up_run(recipe, out, ctx, data_root, progress)
    history, train_seconds = resume_run(run, log) if resume else ([], 0.0)
    if overwrite and ctx.is_main:  # only now: a run that failed to start has destroyed nothing
        remove_previous_run(out)
    callbacks = run_callbacks(recipe, ctx, out, callbacks)
    net = training_net(run)
    autocast = autocast_for(recipe, ctx.device)
    bar_factory = _progress_factory(progress and ctx.is_main)

    notify(callbacks, "on_train_start", run.model, out)
    for epoch in range(len(history), recipe.train.epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {}
        t0 = time.perf_counter()
        record = train_one_epoch(run, net, epoch, autocast, bar_factory)
        train_seconds = finish_epoch(run, record, history, train_seconds, t0, autocast, log)
        notify(callbacks, "on_epoch_end", history[-1], run.model, out)
        dist_utils.barrier()

    report = finish_run(run, history, train_seconds, autocast, log)
    notify(callbacks, "on_train_end", report, run.model, out)
    dist_utils.teardown()
    return report


@dataclass
class TrainingRun:
    """What :func:`set_up_run` builds for one run: the pieces every step of :func:`train` uses."""

    recipe: Recipe
    out: Path
    ctx: RunContext
    splits: DatasetSplits
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_feed: DeviceFeed
    test_feed: DeviceFeed
    #: Per-epoch evaluation runs on the validation split when there is one (the test split is then
    #: scored once, after the last epoch), else on the test split.
    val_feed: DeviceFeed | None
    steps_per_epoch: int

    @property
    def eval_key(self) -> str:
        return "val_accuracy_per_step" if self.val_feed is not None else "test_accuracy_per_step"

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME


def start_run(out: Path, device: str | None, log: Callable[[str], None]) -> tuple[RunContext, Callable[[str], None]]:
    """Join the process group (one process without DDP), pick the device, make ``out`` on rank 0;
    only rank 0 logs."""
    rank, world = dist_utils.setup(device)  # the backend follows the device
    ctx = RunContext(resolve_device(device) if world == 1 else dist_utils.rank_device(device), rank, world)
    if not ctx.is_main:
        return ctx, lambda _msg: None
    out.mkdir(parents=True, exist_ok=True)
    return ctx, log


def set_up_run(recipe: Recipe, out: Path, ctx: RunContext, data_root: str | Path | None, progress: bool) -> TrainingRun:
    """Data, model (initial weights loaded, moved to the device), optimizer, loss and the feeds."""
    t, d = recipe.train, recipe.data
    with progress_bars(progress and ctx.is_main):  # event emulation draws a bar too; --no-progress stills it
        splits = prepare_data(recipe, data_root)
    model = make_model(recipe, splits)
    train_feed = make_train_feed(recipe, splits, data_root, ctx)
    if t.init_checkpoint:
        load_initial_weights(recipe, model)
    else:
        initialise_from_data(model, train_feed)
    if t.freeze_bn_weights:
        freeze_batchnorm_weights(model)
    if t.bn_momentum is not None:
        set_batchnorm_momentum(model, t.bn_momentum)
    model = model.to(ctx.device)
    if t.channels_last and ctx.device.type == "cuda":
        # Module.to takes memory_format at runtime, but torch's stubs for its overloads omit it
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(recipe, model)
    loss_fn = make_loss(recipe, model)
    rank, world = ctx.rank, ctx.world
    test_feed = DeviceFeed(splits.test, d.eval_batch_size, ctx.device, train=False, rank=rank, world=world)
    val_feed = (DeviceFeed(splits.val, d.eval_batch_size, ctx.device, train=False, rank=rank, world=world)
                if splits.val is not None else None)
    return TrainingRun(recipe, out, ctx, splits, model, optimizer, loss_fn, train_feed, test_feed, val_feed,
                       train_feed.num_batches())


DATA_INIT_SAMPLES = 5000


def initialise_from_data(model: nn.Module, feed: DeviceFeed, samples: int = DATA_INIT_SAMPLES) -> None:
    """Data-dependent initialisation: a model with an ``init_from_data(images)`` method (e.g. the
    whitening stem of ``cifar_fast``) gets the first ``samples`` training images as the network
    sees them (normalised, not augmented; the stored order, so every rank and every rerun gets the
    same ones). Static images only; runs before any checkpoint is loaded, so ``--resume`` and
    ``train.init_checkpoint`` weights override it."""
    init = getattr(model, "init_from_data", None)
    if not callable(init) or feed.ds.is_sequence or len(feed.labels) == 0:
        return
    with torch.no_grad():
        init(feed.prepare_eval(feed.inputs[:samples]).cpu())


def make_train_feed(recipe: Recipe, splits: DatasetSplits, data_root: str | Path | None, ctx: RunContext) -> DeviceFeed:
    """The training feed: shuffled, augmented on tensors; with ``data.augment`` on, event-level
    augmentation whose training currents are recomputed every epoch."""
    t, d = recipe.train, recipe.data
    per_rank_batch = max(1, d.batch_size // ctx.world)
    augment = EventAugmentSpec.from_dict(d.augment)
    if augment.enabled:
        from .event_feed import event_augment_feed

        return event_augment_feed(d.dataset, d.options, augment, splits.train, data_root, per_rank_batch, ctx.device,
                                  seed=t.seed, crop_padding=d.crop_padding, flip=d.flip, rank=ctx.rank, world=ctx.world)
    return DeviceFeed(splits.train, per_rank_batch, ctx.device, train=True, seed=t.seed, crop_padding=d.crop_padding,
                      flip=d.flip, rank=ctx.rank, world=ctx.world)


def resume_run(run: TrainingRun, log: Callable[[str], None]) -> tuple[list[dict], float]:
    """Load the latest good checkpoint of ``run.out`` into the model, optimizer and RNG; return the
    history and training seconds so far (the run continues after ``len(history)`` epochs)."""
    ckpt_path, recipe = run.checkpoint_path, run.recipe
    found = latest_good(ckpt_path)
    if found is None:
        raise CheckpointError(f"--resume: no checkpoint in {run.out} (expected {ckpt_path})")
    state, used = found
    if used != ckpt_path:
        log(f"warning: {ckpt_path} is unreadable; resuming from the previous good checkpoint {used}")
    check_training_state(state, used)
    saved = recipe_from_dict(state["recipe"], source=f"checkpoint {used}")
    if saved != recipe:
        raise CheckpointError(f"{used}: was written by a different recipe; resume with the same recipe and --set "
                              "options, or start a new --out directory")
    if state["epoch"] > recipe.train.epochs:
        raise CheckpointError(f"{used}: says epoch {state['epoch']} but the recipe has only {recipe.train.epochs} epochs")
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if run.ctx.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], run.ctx.device)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        detail = " ".join(str(exc).split())  # torch's messages span lines; the CLI prints one
        detail = detail if len(detail) <= 400 else detail[:400] + "..."
        raise CheckpointError(f"{used}: does not fit this run's model or optimizer "
                              f"({type(exc).__name__}: {detail})") from None
    log(f"resumed from {used} after epoch {state['epoch']}")
    return state["history"], float(state["train_seconds"])


def run_callbacks(recipe: Recipe, ctx: RunContext, out: Path, callbacks: list | None) -> list:
    """The user's callbacks plus plots (and TensorBoard when the recipe asks), on rank 0 only."""
    if not ctx.is_main:
        return []
    from ..plots import PlotsCallback

    found = [*(callbacks or []), PlotsCallback()]  # spike rates, a spike raster, event previews
    if recipe.train.tensorboard:
        from ..tblog import TensorBoardCallback

        found.append(TensorBoardCallback(out / "tb"))
    return found


def notify(callbacks: list, event: str, *args: Any) -> None:
    """Call ``event`` on every callback that defines it."""
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


def training_net(run: TrainingRun) -> nn.Module:
    """The module the optimizer steps through: the model, DDP-wrapped and compiled as the recipe asks.
    The state dict, checkpoints and evaluation keep using ``run.model``: inside a compiled graph
    the fused CPU kernels give way to PyTorch's ops, which inductor fuses instead."""
    net: nn.Module = dist_utils.wrap(run.model, run.ctx.device) if run.ctx.world > 1 else run.model
    # torch.compile of a module returns an OptimizedModule (an nn.Module); torch's stubs say Callable
    return cast(nn.Module, torch.compile(net)) if run.recipe.train.compile else net


def train_one_epoch(run: TrainingRun, net: nn.Module, epoch: int, autocast: contextlib.AbstractContextManager,
                    bar_factory: Callable, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """One pass over the training feed; returns the epoch's mean loss, accuracy and last learning rate.

    ``on_step(i, loss)``, when given, sees every optimizer step's training loss (probes of the warm-up
    use it); it costs one device sync per step, so the ``fewstep train`` loop leaves it out."""
    recipe, model, optimizer, device = run.recipe, run.model, run.optimizer, run.ctx.device
    t, steps = recipe.train, run.steps_per_epoch
    net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, t.lr
    bar = bar_factory(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}")
    for i, (x, y) in enumerate(run.train_feed.epoch(epoch)):
        lr = lr_at(recipe, epoch * steps + i, steps * t.epochs, steps)
        set_learning_rate(optimizer, lr)
        with autocast:
            logits = net(x)
        loss = run.loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        reset_net(model)
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().float().mean(0).argmax(-1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step(i, loss.item())
        if bar is not None:
            bar.update(1)
            if i % 10 == 0 or i == steps - 1:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}")
    if bar is not None:
        bar.close()
    return {"train_loss": float(loss_sum.item() / max(seen, 1)), "train_accuracy": float(correct.item() / max(seen, 1)),
            "lr": lr}


def finish_epoch(run: TrainingRun, record: dict[str, Any], history: list[dict], train_seconds: float, t0: float,
                 autocast: contextlib.AbstractContextManager, log: Callable[[str], None]) -> float:
    """Stop on divergence (the last good checkpoint kept), evaluate, append the epoch to
    ``history``, log it and checkpoint the run (rank 0); returns the training seconds so far."""
    epoch, model = len(history), run.model
    problem = divergence_problem(epoch + 1, record["train_loss"], model, run.checkpoint_path)  # parameters *and* buffers
    if problem is not None:
        raise TrainingDiverged(problem)
    # unwrapped model: DDP would sync buffers per forward
    acc_steps = evaluate(model, run.val_feed or run.test_feed, autocast, run.ctx.world, flip=run.recipe.data.eval_flip)
    seconds = time.perf_counter() - t0
    train_seconds += seconds
    history.append({"epoch": epoch + 1, "train_loss": record["train_loss"], "train_accuracy": record["train_accuracy"],
                    run.eval_key: acc_steps, "lr": record["lr"], "seconds": seconds})
    log(f"epoch {epoch + 1}/{run.recipe.train.epochs}: loss {record['train_loss']:.4f}  train acc "
        f"{record['train_accuracy']:.4f}  {run.eval_key.split('_')[0]} acc per step "
        f"{' '.join(f'{a:.4f}' for a in acc_steps)}  ({seconds:.1f}s)")
    if run.ctx.is_main:
        save_checkpoint(training_state(run, history, train_seconds), run.checkpoint_path)
    return train_seconds


def training_state(run: TrainingRun, history: list[dict], train_seconds: float) -> dict[str, Any]:
    """The checkpoint after ``len(history)`` epochs (see :data:`TRAINING_STATE_KEYS`)."""
    state = {"recipe": run.recipe.to_dict(), "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "epoch": len(history), "history": history, "train_seconds": train_seconds,
             "rng_cpu": torch.get_rng_state(), "fewstep_version": __version__}
    if run.ctx.device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(run.ctx.device)
    return state


def finish_run(run: TrainingRun, history: list[dict], train_seconds: float,
               autocast: contextlib.AbstractContextManager, log: Callable[[str], None]) -> dict[str, Any]:
    """Score the test split (once, after the last epoch, when epochs were scored on validation),
    build the report with its energy estimate and write it (rank 0)."""
    recipe, model = run.recipe, run.model
    if run.val_feed is not None:
        test_acc = evaluate(model, run.test_feed, autocast, run.ctx.world, flip=recipe.data.eval_flip)
        log(f"test acc per step {' '.join(f'{a:.4f}' for a in test_acc)} (scored once, after the last epoch)")
    else:
        test_acc = history[-1]["test_accuracy_per_step"] if history else []
    report = build_report(recipe, run.splits, model, history, train_seconds, run.ctx, test_acc)
    report["energy"] = measure_energy(recipe, model, run.test_feed)
    if run.ctx.is_main:
        from ..report import write_report

        write_report(report, run.out)
    return report


def build_report(recipe: Recipe, splits: DatasetSplits, model: nn.Module, history: list[dict], train_seconds: float,
                 ctx: RunContext, test_accuracy: list[float] | None = None) -> dict[str, Any]:
    if test_accuracy is None:
        test_accuracy = history[-1].get("test_accuracy_per_step", []) if history else []
    final = list(test_accuracy)
    val = history[-1].get("val_accuracy_per_step") if history else None
    return {
        "recipe": recipe.name,
        "dataset": recipe.data.dataset,
        "model": recipe.model.name,
        "neuron": recipe.neuron.kind,
        "timesteps": len(final),
        "accuracy_per_step": final,
        "accuracy": final[-1] if final else None,
        # False: a step t < T output depends on later inputs, so the per-step accuracies before T
        # are no anytime accuracies (fewstep.infer refuses such a model)
        "causal": is_causal(model),
        "train_seconds": round(train_seconds, 3),
        "epochs": len(history),
        "seed": recipe.train.seed,
        "device": str(ctx.device) if ctx.device.type == "cpu" else torch.cuda.get_device_name(ctx.device),
        "world_size": ctx.world,
        "threads": torch.get_num_threads(),
        "train_samples": len(splits.train),
        "val_samples": len(splits.val) if splits.val is not None else 0,
        "val_accuracy_per_step": val,
        "test_samples": len(splits.test),
        "parameters": sum(p.numel() for p in model.parameters()),
        "history": history,
        "config": recipe.to_dict(),
        "fewstep_version": __version__,
        "torch_version": torch.__version__,
    }


def measure_energy(recipe: Recipe, model: nn.Module, feed: DeviceFeed, samples: int = 256) -> dict[str, Any]:
    """Energy per sample on the first ``samples`` test inputs (see :mod:`fewstep.energy`)."""
    from ..energy import count_energy

    x, _ = next(iter(DeviceFeed(feed.ds.subset(samples), samples, feed.device, train=False).epoch(0)))
    return count_energy(model, x, preset=recipe.train.energy_preset).to_dict()


def _progress_factory(enabled: bool):
    if not enabled:
        return lambda **kw: None
    from tqdm.auto import tqdm

    return lambda **kw: tqdm(leave=False, dynamic_ncols=True, **kw)


def configure_threads(requested: int | None = None) -> int:
    """Set PyTorch's CPU threads to ``requested``, else ``$FEWSTEP_THREADS``, else the number of
    cores this process may run on; returns the count (recorded in ``report.json``)."""
    n: int | None = requested
    if not n:
        text = os.environ.get("FEWSTEP_THREADS", "").strip()
        if text:
            try:
                n = int(text)
            except ValueError:
                raise FewstepError(f"FEWSTEP_THREADS must be a positive integer, got {text!r}") from None
            if n < 1:
                raise FewstepError(f"FEWSTEP_THREADS must be a positive integer, got {text!r}")
    if not n:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n < 1:
        raise FewstepError(f"the thread count must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def threads_from_env() -> int:
    """Honour ``FEWSTEP_THREADS`` for CPU runs (default: every core); see :func:`configure_threads`."""
    return configure_threads()
