"""The search loop: train mask parameters on frozen weights, checkpoint every epoch, write the
run directory (ticket, summary, metrics). `search(config, out)` is the library entry point."""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slt_deploy.atomic import atomic_path, write_text
from slt_deploy.data import DataSplit, load_dataset
from slt_deploy.data.base import normalise, steps_per_epoch, train_batches
from slt_deploy.errors import SltError
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.methods import METHODS, Method, build_optimizer
from slt_deploy.search.sparsity import CONTROL_EVERY, SparsityController
from slt_deploy.search.stats import (
    MaskState,
    add_penalty_grad_,
    gate_histogram,
    mask_state,
    n_gate_params,
    penalty_balance,
    per_layer_sparsity,
    totals,
)
from slt_deploy.ticket import (
    TICKET_FILE,
    Ticket,
    build_search_model,
    model_checksum,
    save_ticket,
    ticket_tensors,
)

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_VERSION = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SltError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def prepare_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse to clobber a run unless asked; --force replaces it, --resume continues it."""
    if resume and force:
        raise SltError("give --resume or --force, not both")
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise SltError(f"--resume: no checkpoint in {out}")
        return
    if exists and not force:
        raise SltError(f"{out} exists; pass --resume to continue it or --force to replace it")
    if exists:
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SltError(f"cannot create {out}: {exc.strerror or exc}") from None


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


def learning_rate(base: float, step: int, total: int, schedule: str) -> float:
    if schedule == "constant":
        return base
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / total))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: Method,
    controller: SparsityController,
    x: torch.Tensor,
    y: torch.Tensor,
    step: int,
    total_steps: int,
    autocast=None,
) -> tuple[torch.Tensor, torch.Tensor, MaskState | None]:
    """One optimizer step: CE on a relaxed sample, the expected-L0 penalty added as its
    analytic gradient, and (every CONTROL_EVERY steps) a sparsity-control update."""
    with autocast or nullcontext():
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    masks = None
    if method.penalised:
        if controller.needs_scale:
            controller.scale = penalty_balance(model)
        if controller.lam:
            add_penalty_grad_(model, controller.lam / n_gate_params(model))
    optimizer.step()
    if method.penalised and (step + 1) % CONTROL_EVERY == 0:
        masks = mask_state(model)
        controller.update(
            masks.binary_density, masks.soft_density, step / total_steps, CONTROL_EVERY
        )
    return loss.detach(), logits.detach(), masks


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
                transient=False,
            )
            self.task = self.bar.add_task("search", total=total, info="")

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
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
    """Run a search into run directory `out` and return its summary."""
    config.validate()
    out = Path(out)
    device = resolve_device(config.device)
    data = load_dataset(config.data, config.data_dir, config.download).subset(config.subset)
    if config.subset is not None and len(data.test_y) == 0:
        raise SltError("--subset left no test samples")
    torch.manual_seed(config.seed)
    model = build_search_model(config, data.spec)  # model errors surface before any write
    prepare_run_dir(out, resume, force)

    model.to(device).train()
    method = METHODS.get(config.method)
    optimizer = build_optimizer(model, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    controller = SparsityController.create(
        config.target_sparsity if method.penalised else None, config.l0, config.controller_rate
    )
    total_steps = config.epochs * steps_per_epoch(data, config.batch_size)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    masks = mask_state(model)
    density = masks.binary_density if masks else 1.0
    state, history = _State(), []
    if resume:
        state, history = _load_checkpoint(
            out / CHECKPOINT_FILE, config, model, optimizer, controller, device
        )
    else:
        write_text(out / CONFIG_FILE, json.dumps(config.to_dict(), indent=2, sort_keys=True))
        write_text(out / METRICS_FILE, "")

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and config.amp
        else nullcontext()
    )
    started = time.perf_counter() - state.wall
    with _Progress(progress, total_steps) as bar:
        while state.step < total_steps and state.epoch < config.epochs:
            losses, correct, seen = 0.0, 0, 0
            for images, labels in train_batches(data, config.batch_size, config.seed, state.epoch):
                if state.step >= total_steps:
                    break
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = learning_rate(base, state.step, total_steps, config.schedule)
                x = normalise(images.to(device, non_blocking=True), data.spec)
                y = labels.to(device, non_blocking=True)
                loss, logits, masks = train_step(
                    model, optimizer, method, controller, x, y, state.step, total_steps, autocast
                )
                if masks is not None:
                    density = masks.binary_density
                state.step += 1
                losses += float(loss) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                if state.step % 10 == 0 or state.step == total_steps:
                    bar.update(
                        state.step,
                        state.epoch,
                        f"loss {float(loss):.3f} "
                        f"acc {correct / seen:.3f} sparsity {1 - density:.3f} "
                        f"λ {controller.lam:.3g}",
                    )
            record = _epoch_record(
                model,
                data,
                config,
                device,
                state,
                controller,
                losses / max(1, seen),
                correct / max(1, seen),
                started,
            )
            history.append(record)
            state.epoch += 1
            state.wall = time.perf_counter() - started
            _save_checkpoint(
                out / CHECKPOINT_FILE, config, model, optimizer, controller, state, history
            )
            with open(out / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            bar.update(
                state.step,
                state.epoch - 1,
                f"test {record['test_accuracy']:.4f} sparsity {record['sparsity']:.3f}",
            )
    return _finish(out, config, model, data, device, state, history)


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
    test_accuracy = evaluate(model, data.test_x, data.test_y, data, config.eval_batch_size, device)
    _, _, sparsity = totals(per_layer_sparsity(model))
    masks = mask_state(model)
    return {
        "epoch": state.epoch + 1,
        "step": state.step,
        "train_loss": loss,
        "train_accuracy": acc,
        "test_accuracy": test_accuracy,
        "sparsity": sparsity,
        "lambda": controller.lam,
        "expected_density": masks.expected_density if masks else None,
        "gate_histogram": gate_histogram(model),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _finish(
    out: Path,
    config: SearchConfig,
    model: nn.Module,
    data: DataSplit,
    device: torch.device,
    state: _State,
    history: list[dict],
) -> dict:
    model.eval()
    layers = per_layer_sparsity(model)
    total, kept, sparsity = totals(layers)
    test_accuracy = (
        history[-1]["test_accuracy"]
        if history
        else evaluate(model, data.test_x, data.test_y, data, config.eval_batch_size, device)
    )
    histogram = history[-1]["gate_histogram"] if history else gate_histogram(model)
    summary = {
        "test_accuracy": test_accuracy,
        "sparsity": sparsity,
        "params_total": total,
        "params_kept": kept,
        "per_layer": layers,
        "method": config.method,
        "gate": config.gate if config.method == "gates" else None,
        "granularity": config.granularity,
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
        "pure_ticket": not (config.learn_bias or config.affine_bn) and config.method != "dense",
    }
    model.cpu()
    ticket = Ticket(
        config,
        data.spec,
        ticket_tensors(model),
        model_checksum(model),
        {k: summary[k] for k in ("test_accuracy", "sparsity", "params_total", "params_kept")},
    )
    save_ticket(out / TICKET_FILE, ticket)
    write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _save_checkpoint(
    path: Path,
    config: SearchConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    controller: SparsityController,
    state: _State,
    history: list[dict],
) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(config.replay_key(), sort_keys=True),
        "model": ticket_tensors(model),
        "optimizer": optimizer.state_dict(),
        "controller": controller.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "epoch": state.epoch,
        "step": state.step,
        "wall": state.wall,
        "history": json.dumps(history),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(
    path: Path,
    config: SearchConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    controller: SparsityController,
    device: torch.device,
) -> tuple[_State, list[dict]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CHECKPOINT_VERSION:
            raise SltError(f"{path}: unsupported checkpoint version {payload.get('version')}")
        saved_config = json.loads(payload["config"])
        if saved_config != config.replay_key():
            changed = sorted(
                k for k in saved_config if saved_config.get(k) != config.replay_key().get(k)
            )
            raise SltError(
                f"--resume: settings differ from the run being resumed "
                f"({', '.join(changed)}); resume with the same settings"
            )
        model.load_state_dict(payload["model"], strict=False)
        optimizer.load_state_dict(payload["optimizer"])
        controller.load_state_dict(payload["controller"])
        torch.set_rng_state(payload["rng"])
        if payload["cuda_rng"] and device.type == "cuda":
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        history = json.loads(payload["history"])
        state = _State(int(payload["epoch"]), int(payload["step"]), float(payload["wall"]))
    except SltError:
        raise
    except Exception as exc:  # torch raises many types for a damaged file
        raise SltError(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from None
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
    write_text(path.parent / METRICS_FILE, lines)  # drop records of epochs after the checkpoint
    model.to(device)
    return state, history
