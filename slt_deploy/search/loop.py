"""The search loop: train mask parameters on frozen weights, checkpoint every epoch, write the
run directory (ticket, summary, metrics). `search(config, out)` is the library entry point."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from slt_deploy.accuracy import accuracy, torch_predictor
from slt_deploy.atomic import write_text
from slt_deploy.data import DataSplit, load_dataset
from slt_deploy.data.base import normalise, steps_per_epoch, train_batches
from slt_deploy.errors import SltError
from slt_deploy.masking.layers import gate_families
from slt_deploy.search import budget, rundir
from slt_deploy.search.batchnorm import recalibrate_batchnorm_
from slt_deploy.search.checkpoints import RunState, load_run_checkpoint, save_run_checkpoint
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import resolve
from slt_deploy.search.distributed import World, close_world, init_world
from slt_deploy.search.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    check_run_dir,
    prepare_run_dir,
)
from slt_deploy.search.stats import (
    gate_histogram,
    live_counts,
    mask_state,
    multiply_adds,
    output_positions,
    per_layer_sparsity,
    searched_network,
    structured_sparsity,
    totals,
)
from slt_deploy.search.ticket import (
    TICKET_FILE,
    Ticket,
    model_checksum,
    save_ticket,
    ticket_tensors,
)
from slt_deploy.search.trainer import NonFiniteError, Trainer, build_trainer

__all__ = ["CHECKPOINT_FILE", "CONFIG_FILE", "METRICS_FILE", "SUMMARY_FILE", "evaluate", "search"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SltError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    data: DataSplit,
    batch_size: int,
    device: torch.device,
) -> float:
    """Accuracy with the binary mask (eval mode): what is reported is what is deployed."""
    was_training = model.training
    model.eval()
    result = accuracy(torch_predictor(model), images, labels, data.spec, batch_size, device)
    model.train(was_training)
    return result


@dataclass
class _Run:
    """One search in progress: what every part of the loop reads, and where it is."""

    out: Path
    config: SearchConfig
    trainer: Trainer
    data: DataSplit
    device: torch.device
    total_steps: int
    state: RunState = field(default_factory=RunState)
    history: list[dict] = field(default_factory=list)
    started: float = 0.0  # perf_counter at the start, less the wall time of resumed epochs

    @property
    def model(self) -> nn.Module:
        return self.trainer.model

    @property
    def world(self) -> World:
        return self.trainer.world

    def accuracy(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        return evaluate(model, images, labels, self.data, self.config.eval_batch_size, self.device)


class _Progress:
    """A rich progress bar on stderr with loss, accuracy, sparsity and λ; silent when quiet."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("search", total=total, info="")

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            if exc[0] is not None:  # an error is one line: take the bar away first
                self.bar.live.transient = True
            self.bar.__exit__(*exc)

    def update(self, step: int, epoch: int, info: str) -> None:
        if self.bar:
            self.bar.update(self.task, completed=step, description=f"epoch {epoch + 1}", info=info)


def search(
    config: SearchConfig,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Run a search into run directory `out` and return its summary (under torchrun: as one
    rank of a data-parallel search; distributed.py)."""
    config.validate()
    device = resolve_device(config.device)
    world = init_world(device)
    try:
        return _search(config, Path(out), resume, force, progress, device, world)
    finally:
        close_world(world)


def _search(
    config: SearchConfig,
    out: Path,
    resume: bool,
    force: bool,
    progress: bool,
    device: torch.device,
    world: World,
) -> dict:
    data = load_dataset(config.data, config.data_dir, config.download).subset(config.subset)
    if config.subset is not None and len(data.test_y) == 0:
        raise SltError("--subset left no test samples")
    data = data.hold_out(config.val_split, config.val_seed)
    if config.batch_size < world.size:
        raise SltError(f"--batch-size {config.batch_size} is smaller than the {world.size} ranks")
    total_steps = config.epochs * steps_per_epoch(data, config.batch_size)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    config = resolve(config, total_steps)
    trainer = build_trainer(config, data.spec, total_steps, device, world)  # errors before writes
    if world.distributed:
        world.check_same_weights(model_checksum(trainer.model), device)
    with contextlib.ExitStack() as stack:
        error = None
        if world.main:  # one writer: rank 0 holds the lock and prepares the directory
            try:
                check_run_dir(out, resume, force)
                stack.enter_context(rundir.run_dir_lock(out))
                resume = prepare_run_dir(out, config, resume, force)
            except SltError as exc:
                error = str(exc)
        world.share_error(error, device)
        resume = world.any(resume and world.main, device)
        world.barrier()
        run = _Run(out, config, trainer, data.training_set_on(device), device, total_steps)
        return _train(run, resume, progress)


def _train(run: _Run, resume: bool, progress: bool) -> dict:
    masks = mask_state(run.model)
    density = masks.binary_density if masks else 1.0
    config, device, world, trainer, data = run.config, run.device, run.world, run.trainer, run.data
    if resume:
        run.state, run.history = load_run_checkpoint(
            run.out / CHECKPOINT_FILE, config, trainer, device
        )
    elif world.main:
        write_text(run.out / CONFIG_FILE, json.dumps(config.to_dict(), indent=2, sort_keys=True))
        write_text(run.out / METRICS_FILE, "")

    state = run.state
    run.started = time.perf_counter() - state.wall
    with _Progress(progress and world.main, run.total_steps) as bar:
        while state.step < run.total_steps and state.epoch < config.epochs:
            # running sums stay on the device: reading them every step would stall the GPU
            losses = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for images, labels in train_batches(data, config.batch_size, config.seed, state.epoch):
                if state.step >= run.total_steps:
                    break
                images, labels, weight = world.shard(images, labels)
                x = normalise(images.to(device, non_blocking=True), data.spec)
                y = labels.to(device, non_blocking=True)
                try:
                    result = trainer.step(x, y, state.step, weight)
                except NonFiniteError as exc:
                    raise _stopped(exc.what, exc.step, state.epoch, run.out) from None
                state.step += 1
                if result is None:  # skipped by --on-nan skip-batch
                    continue
                loss, logits, masks = result
                if masks is not None:
                    density = masks.binary_density
                losses += loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                if state.step % 10 == 0 or state.step == run.total_steps:
                    bar.update(
                        state.step,
                        state.epoch,
                        f"loss {float(loss):.3f} acc {int(correct) / seen:.3f} "
                        f"sparsity {1 - density:.3f}{_force(trainer)}",
                    )
            losses, correct, seen = world.sum([float(losses), int(correct), seen], device)
            record = _end_epoch(run, losses / max(1, seen), correct / max(1, seen))
            shown = "structured_sparsity" if config.target_scope == "structure" else "sparsity"
            bar.update(
                state.step,
                state.epoch - 1,
                f"test {record['test_accuracy']:.4f} {shown.replace('_', ' ')} {record[shown]:.3f}",
            )
    return _finish(run, write=world.main)


def _end_epoch(run: _Run, loss: float, acc: float) -> dict:
    """Evaluate, record and checkpoint the epoch just trained; its record is returned."""
    config, state, trainer = run.config, run.state, run.trainer
    moved = None
    if budget.applies(config) and (
        state.step >= run.total_steps or state.epoch + 1 >= config.epochs
    ):  # the last epoch: its record, checkpoint and ticket carry the exact mask
        moved = budget.meet_target_(run.model, config.target_sparsity)
    record = _epoch_record(run, loss, acc)
    if not trainer.parameters_finite():  # never checkpoint a broken state
        raise _stopped("trained parameter", state.step, state.epoch, run.out)
    record["skipped_batches"] = trainer.skipped_batches
    if moved is not None:
        record["gates_moved_to_target"] = moved
    run.history.append(record)
    state.epoch += 1
    state.wall = time.perf_counter() - run.started
    if run.world.main:
        save_run_checkpoint(run.out / CHECKPOINT_FILE, config, trainer, state, run.history)
        with open(run.out / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def _stopped(what: str, step: int, epoch: int, out: Path) -> SltError:
    kept = (
        f"the checkpoint of epoch {epoch} in {out} is kept"
        if epoch
        else "no checkpoint had been written yet"
    )
    return SltError(
        f"non-finite {what} (NaN or Inf) at step {step + 1}, epoch {epoch + 1}: stopped; {kept}. "
        "--on-nan skip-batch skips such batches (then --resume), or lower --lr in a new run"
    )


def _epoch_record(run: _Run, loss: float, acc: float) -> dict:
    model, data, config, state = run.model, run.data, run.config, run.state
    if any(True for _ in gate_families(model)):  # relaxed masks in training: see batchnorm.py
        recalibrate_batchnorm_(model, data, config.batch_size, config.seed, run.device)
    test_accuracy = run.accuracy(model, data.test_x, data.test_y)
    val_accuracy = None if data.val_y is None else run.accuracy(model, data.val_x, data.val_y)
    _, _, sparsity = totals(per_layer_sparsity(model))
    masks = mask_state(model, expected=True)
    record = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "train_loss": loss,
        "train_accuracy": acc,
        "test_accuracy": test_accuracy,
        "val_accuracy": val_accuracy,
        "sparsity": sparsity,
        "lambda": run.trainer.controller.lam,
        "expected_density": masks.expected_density if masks else None,
        "gate_histogram": gate_histogram(model),
        "seconds": round(time.perf_counter() - run.started, 3),
    }
    structured = structured_sparsity(model)
    if structured is not None:
        record["structured_sparsity"] = structured
    return record


def _finish(run: _Run, write: bool = True) -> dict:
    model, data, config, state, history = run.model, run.data, run.config, run.state, run.history
    model.eval()
    layers = per_layer_sparsity(model)
    total, kept, sparsity = totals(layers)
    for name, positions in output_positions(model, tuple(data.spec.input_shape)).items():
        if name in layers:
            layers[name]["positions"] = positions
    macs_kept, macs_total = multiply_adds(layers)
    plain, masks = searched_network(model)  # folded once: for the live counts and the shrink
    params_live, macs_live = live_counts(plain, masks, layers, tuple(data.spec.input_shape))
    if history:
        test_accuracy, histogram = history[-1]["test_accuracy"], history[-1]["gate_histogram"]
    else:
        test_accuracy = run.accuracy(model, data.test_x, data.test_y)
        histogram = gate_histogram(model)
    summary = {
        "test_accuracy": test_accuracy,
        "val_accuracy": history[-1].get("val_accuracy") if history else None,
        "sparsity": sparsity,
        "params_total": total,
        "params_kept": kept,
        "per_layer": layers,
        "macs_kept": macs_kept,
        "macs_total": macs_total,
        # what export ships: the kept weights less those on dead paths
        "params_live": params_live,
        "macs_live": macs_live,
        "method": config.method,
        "gate": config.gate if config.method == "gates" else None,
        "granularity": config.granularity,
        "cost": config.cost,
        "epochs": state.epoch,
        "steps": state.step,
        "wall_seconds": round(state.wall, 3),
        "target_sparsity": config.target_sparsity,
        "lambda": history[-1]["lambda"] if history else None,
        "undecided_gates": histogram["undecided"] if histogram else None,
        "model": config.model,
        "data": config.data,
        "seed": config.seed,
        "device": run.device.type,
        "skipped_batches": history[-1].get("skipped_batches", 0) if history else 0,
        "gates_moved_to_target": history[-1].get("gates_moved_to_target") if history else None,
        "pure_ticket": not (config.learn_bias or config.affine_bn) and config.method != "dense",
    }
    if config.granularity.startswith("channel"):
        summary.update(_shrunk_summary(run, plain))
    if not write:
        return summary
    model.cpu()
    metrics = {k: summary[k] for k in ("test_accuracy", "sparsity", "params_total", "params_kept")}
    ticket = Ticket(config, data.spec, ticket_tensors(model), model_checksum(model), metrics)
    save_ticket(run.out / TICKET_FILE, ticket)
    write_text(run.out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _shrunk_summary(run: _Run, plain: nn.Module) -> dict:
    """Channel tickets: the physically smaller network the export writes (from `plain`, the
    folded searched network), its size and its own test accuracy (it must predict what the
    masked network predicts)."""
    from slt_deploy.masking.shrink import measure, shrink

    model = run.model
    shape = tuple(run.data.spec.input_shape)
    small, kept = shrink(plain, shape)
    before, after = measure(plain, shape), measure(small, shape)
    accuracy_small = run.accuracy(small.to(run.device), run.data.test_x, run.data.test_y)
    return {
        "structured_sparsity": structured_sparsity(model),
        "target_scope": run.config.target_scope,
        "shrunk_test_accuracy": accuracy_small,
        "shrunk_channels_kept": kept,
        "shrunk_params_ratio": after.params / before.params,
        "shrunk_macs_ratio": after.macs / before.macs,
        "params_dense_network": before.params,
        "params_shrunk_network": after.params,
        "macs_dense_network": before.macs,
        "macs_shrunk_network": after.macs,
    }


def _force(trainer: Trainer) -> str:
    """What holds the density: λ under the penalty; nothing to show under the shift."""
    return "" if trainer.config.budget == "shift" else f" λ {trainer.controller.lam:.3g}"
