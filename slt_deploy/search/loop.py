"""The search loop: train mask parameters on frozen weights, checkpoint every epoch, write the
run directory (ticket, summary, metrics). `search(config, out)` is the library entry point."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slt_deploy.atomic import write_text
from slt_deploy.checkpoint import load_checkpoint, save_checkpoint
from slt_deploy.data import DataSplit, load_dataset
from slt_deploy.data.base import normalise, steps_per_epoch, train_batches
from slt_deploy.errors import SltError
from slt_deploy.masking.layers import gate_families, masked_layers
from slt_deploy.search import budget, rundir
from slt_deploy.search.batchnorm import recalibrate_batchnorm_
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import resolve
from slt_deploy.search.distributed import World, close_world, init_world
from slt_deploy.search.sparsity import SparsityController
from slt_deploy.search.stats import (
    gate_histogram,
    mask_state,
    multiply_adds,
    output_positions,
    per_layer_sparsity,
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

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SltError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def check_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refusals that need no lock (nothing is created before them)."""
    if resume and force:
        raise SltError("give --resume or --force, not both")
    if resume and not out.is_dir():
        raise SltError(f"--resume: no run directory {out}")
    if force and out.is_file():
        try:
            out.unlink()
        except OSError as exc:
            raise SltError(f"cannot replace {out}: {exc.strerror or exc}") from None


def prepare_run_dir(out: Path, config: SearchConfig, resume: bool, force: bool) -> bool:
    """With the lock held: refuse to clobber a run unless asked (--force replaces it, --resume
    continues it). Returns whether there is a checkpoint to resume. A run killed before its
    first checkpoint starts over under --resume, if its settings are the same."""
    if resume:
        if (out / CHECKPOINT_FILE).is_file():
            return True
        if rundir.entries(out) and _recorded_config(out) != config.to_dict():
            raise SltError(f"--resume: no checkpoint in {out}")
        rundir.clear(out)
        return False
    if rundir.entries(out) and not force:
        raise SltError(f"{out} exists; pass --resume to continue it or --force to replace it")
    rundir.clear(out)
    return False


def _recorded_config(out: Path) -> dict | None:
    try:
        return json.loads((out / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None


@torch.no_grad()
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
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = normalise(images[start : start + batch_size].to(device), data.spec)
        correct += int((model(x).argmax(1).cpu() == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(labels))


@dataclass
class _State:
    epoch: int = 0
    step: int = 0
    wall: float = 0.0


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
    data = data.hold_out(config.val_split)
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
        return _run(out, config, trainer, data, device, total_steps, resume, progress)


def _run(
    out: Path,
    config: SearchConfig,
    trainer: Trainer,
    data: DataSplit,
    device: torch.device,
    total_steps: int,
    resume: bool,
    progress: bool,
) -> dict:
    world = trainer.world
    data = data.training_set_on(device)
    masks = mask_state(trainer.model)
    density = masks.binary_density if masks else 1.0
    state, history = _State(), []
    if resume:
        state, history = _load_checkpoint(out / CHECKPOINT_FILE, config, trainer, device)
    elif world.main:
        write_text(out / CONFIG_FILE, json.dumps(config.to_dict(), indent=2, sort_keys=True))
        write_text(out / METRICS_FILE, "")

    started = time.perf_counter() - state.wall
    with _Progress(progress and world.main, total_steps) as bar:
        while state.step < total_steps and state.epoch < config.epochs:
            # running sums stay on the device: reading them every step would stall the GPU
            losses = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for images, labels in train_batches(data, config.batch_size, config.seed, state.epoch):
                if state.step >= total_steps:
                    break
                images, labels, weight = world.shard(images, labels)
                x = normalise(images.to(device, non_blocking=True), data.spec)
                y = labels.to(device, non_blocking=True)
                try:
                    result = trainer.step(x, y, state.step, weight)
                except NonFiniteError as exc:
                    raise _stopped(exc.what, exc.step, state.epoch, out) from None
                state.step += 1
                if result is None:  # skipped by --on-nan skip-batch
                    continue
                loss, logits, masks = result
                if masks is not None:
                    density = masks.binary_density
                losses += loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                if state.step % 10 == 0 or state.step == total_steps:
                    bar.update(
                        state.step,
                        state.epoch,
                        f"loss {float(loss):.3f} acc {int(correct) / seen:.3f} "
                        f"sparsity {1 - density:.3f} λ {trainer.controller.lam:.3g}",
                    )
            losses, correct, seen = world.sum([float(losses), int(correct), seen], device)
            moved = None
            if budget.applies(config) and (
                state.step >= total_steps or state.epoch + 1 >= config.epochs
            ):  # the last epoch: its record, checkpoint and ticket carry the exact mask
                moved = budget.meet_target_(trainer.model, config.target_sparsity)
            record = _epoch_record(
                trainer.model,
                data,
                config,
                device,
                state,
                trainer.controller,
                losses / max(1, seen),
                correct / max(1, seen),
                started,
            )
            if not trainer.parameters_finite():  # never checkpoint a broken state
                raise _stopped("trained parameter", state.step, state.epoch, out)
            record["skipped_batches"] = trainer.skipped_batches
            if moved is not None:
                record["gates_moved_to_target"] = moved
            history.append(record)
            state.epoch += 1
            state.wall = time.perf_counter() - started
            if world.main:
                _save_checkpoint(out / CHECKPOINT_FILE, config, trainer, state, history)
                with open(out / METRICS_FILE, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, sort_keys=True) + "\n")
            shown = "structured_sparsity" if config.target_scope == "structure" else "sparsity"
            bar.update(
                state.step,
                state.epoch - 1,
                f"test {record['test_accuracy']:.4f} {shown.replace('_', ' ')} {record[shown]:.3f}",
            )
    return _finish(out, config, trainer.model, data, device, state, history, world.main)


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


def _epoch_record(
    model: nn.Module,
    data: DataSplit,
    config: SearchConfig,
    device: torch.device,
    state: _State,
    controller: SparsityController,
    loss: float,
    acc: float,
    started: float,
) -> dict:
    if any(True for _ in gate_families(model)):  # relaxed masks in training: see batchnorm.py
        recalibrate_batchnorm_(model, data, config.batch_size, config.seed, device)
    test_accuracy = evaluate(model, data.test_x, data.test_y, data, config.eval_batch_size, device)
    val_accuracy = (
        None
        if data.val_y is None
        else evaluate(model, data.val_x, data.val_y, data, config.eval_batch_size, device)
    )
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
        "lambda": controller.lam,
        "expected_density": masks.expected_density if masks else None,
        "gate_histogram": gate_histogram(model),
        "seconds": round(time.perf_counter() - started, 3),
    }
    structured = structured_sparsity(model)
    if structured is not None:
        record["structured_sparsity"] = structured
    return record


def _finish(
    out: Path,
    config: SearchConfig,
    model: nn.Module,
    data: DataSplit,
    device: torch.device,
    state: _State,
    history: list[dict],
    write: bool = True,
) -> dict:
    model.eval()
    layers = per_layer_sparsity(model)
    total, kept, sparsity = totals(layers)
    for name, positions in output_positions(model, tuple(data.spec.input_shape)).items():
        if name in layers:
            layers[name]["positions"] = positions
    macs_kept, macs_total = multiply_adds(layers)
    if history:
        test_accuracy, histogram = history[-1]["test_accuracy"], history[-1]["gate_histogram"]
    else:
        test_accuracy = evaluate(
            model, data.test_x, data.test_y, data, config.eval_batch_size, device
        )
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
        "device": device.type,
        "skipped_batches": history[-1].get("skipped_batches", 0) if history else 0,
        "gates_moved_to_target": history[-1].get("gates_moved_to_target") if history else None,
        "pure_ticket": not (config.learn_bias or config.affine_bn) and config.method != "dense",
    }
    if config.granularity.startswith("channel"):
        summary.update(_shrunk_summary(model, data, config, device))
    if not write:
        return summary
    model.cpu()
    metrics = {k: summary[k] for k in ("test_accuracy", "sparsity", "params_total", "params_kept")}
    ticket = Ticket(config, data.spec, ticket_tensors(model), model_checksum(model), metrics)
    save_ticket(out / TICKET_FILE, ticket)
    write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _shrunk_summary(
    model: nn.Module, data: DataSplit, config: SearchConfig, device: torch.device
) -> dict:
    """Channel tickets: the physically smaller network the export writes, its size and its
    own test accuracy (it must predict what the masked network predicts)."""
    from slt_deploy.masking.fold import fold
    from slt_deploy.masking.shrink import measure, shrink

    masks = {name: layer.mask_source.binary_mask() for name, layer in masked_layers(model)}
    plain = fold(model, masks).cpu()
    shape = tuple(data.spec.input_shape)
    small, kept = shrink(plain, shape)
    before, after = measure(plain, shape), measure(small, shape)
    accuracy = evaluate(
        small.to(device), data.test_x, data.test_y, data, config.eval_batch_size, device
    )
    return {
        "structured_sparsity": structured_sparsity(model),
        "target_scope": config.target_scope,
        "shrunk_test_accuracy": accuracy,
        "shrunk_channels_kept": kept,
        "shrunk_params_ratio": after.params / before.params,
        "shrunk_macs_ratio": after.macs / before.macs,
        "params_dense_network": before.params,
        "params_shrunk_network": after.params,
        "macs_dense_network": before.macs,
        "macs_shrunk_network": after.macs,
    }


def _save_checkpoint(
    path: Path, config: SearchConfig, trainer: Trainer, state: _State, history: list[dict]
) -> None:
    payload = {
        "config": json.dumps(config.replay_key(), sort_keys=True),
        "model": ticket_tensors(trainer.model),
        "trainer": trainer.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "epoch": state.epoch,
        "step": state.step,
        "wall": state.wall,
        "history": json.dumps(history),
    }
    save_checkpoint(path, payload)


def _load_checkpoint(
    path: Path, config: SearchConfig, trainer: Trainer, device: torch.device
) -> tuple[_State, list[dict]]:
    try:
        payload = load_checkpoint(path)
        saved = SearchConfig.recorded_key(json.loads(payload["config"]))
        current = config.replay_key()
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise SltError(
                f"--resume: settings differ from the run being resumed "
                f"({', '.join(changed)}); resume with the same settings (its config.json "
                f"records them; a default may have changed since)"
            )
        trainer.model.load_state_dict(payload["model"], strict=False)
        trainer.load_state_dict(payload["trainer"])
        torch.set_rng_state(payload["rng"])
        if payload["cuda_rng"] and device.type == "cuda":
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        history = json.loads(payload["history"])
        state = _State(int(payload["epoch"]), int(payload["step"]), float(payload["wall"]))
    except SltError:
        raise
    except Exception as exc:  # torch raises many types for a damaged file
        raise SltError(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from None
    if trainer.world.main:  # drop records of epochs after the checkpoint
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
        write_text(path.parent / METRICS_FILE, lines)
    trainer.model.to(device)
    return state, history
