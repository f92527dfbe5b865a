"""A search's checkpoint: the mask parameters, the trainer (optimizer, controller, loss
temperature), the RNG states and the epoch history, written atomically every epoch and sealed
(slt_deploy/checkpoint.py: safetensors, no pickle). `--resume` restores it and refuses one made
with other settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from slt_deploy.atomic import write_text
from slt_deploy.checkpoint import load_checkpoint, save_checkpoint
from slt_deploy.errors import SltError
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.rundir import METRICS_FILE
from slt_deploy.search.ticket import ticket_tensors
from slt_deploy.search.trainer import Trainer


@dataclass
class RunState:
    """Where a search is: what a checkpoint restores."""

    epoch: int = 0
    step: int = 0
    wall: float = 0.0


def save_run_checkpoint(
    path: Path, config: SearchConfig, trainer: Trainer, state: RunState, history: list[dict]
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


def load_run_checkpoint(
    path: Path, config: SearchConfig, trainer: Trainer, device: torch.device
) -> tuple[RunState, list[dict]]:
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
        state = RunState(int(payload["epoch"]), int(payload["step"]), float(payload["wall"]))
    except SltError:
        raise
    except Exception as exc:  # torch raises many types for a damaged file
        raise SltError(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from None
    if trainer.world.main:  # drop records of epochs after the checkpoint
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
        write_text(path.parent / METRICS_FILE, lines)
    trainer.model.to(device)
    return state, history
