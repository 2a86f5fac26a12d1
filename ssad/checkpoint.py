"""Where a training run stands, and the checkpoint a killed run resumes from.

``RunState`` counts steps and epochs and keeps the history; ``save_checkpoint`` writes it with
the model weights and the optimizer state to one ``.npz`` file (atomically); ``run_clock``
measures training time across sessions, so a time budget and the learning-rate schedule go on
where a resumed run stopped.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from ssad.errors import RunDirError
from ssad.files import atomic_write_bytes


@dataclass
class RunState:
    """Where a run stands; saved with every checkpoint."""

    stage: int = 0  # index of the stage in progress
    stage_steps: int = 0  # optimisation steps done in that stage
    step: int = 0  # steps done over all stages
    epoch: int = 0  # epochs done over all stages
    elapsed_s: float = 0.0  # training seconds of all sessions up to the last checkpoint
    done: bool = False
    history: list[dict] = field(default_factory=list)


def save_checkpoint(path: Path, model: keras.Model, state: RunState, write: bool) -> None:
    """Save weights, optimizer variables and ``state``. Every worker reads the values (that
    may take part in collectives); only ``write`` puts them on disk."""
    arrays = {f"w{i}": np.asarray(v) for i, v in enumerate(model.get_weights())}
    for i, v in enumerate(model.optimizer.variables):
        arrays[f"o{i}"] = np.asarray(v.numpy())
    if not write:
        return
    buffer = io.BytesIO()
    np.savez(buffer, state=np.array(json.dumps(asdict(state))), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def read_state(path: Path) -> RunState:
    """The :class:`RunState` saved in checkpoint ``path``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return RunState(**json.loads(str(f["state"])))
    except (OSError, EOFError, KeyError, ValueError, TypeError) as e:
        raise RunDirError(f"{path}: unreadable checkpoint ({e}); delete it to start over") from e


def load_checkpoint(path: Path, model: keras.Model) -> RunState:
    """Restore what :func:`save_checkpoint` wrote into ``model`` (compiled, optimizer built)."""
    state = read_state(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            weights = [f[f"w{i}"] for i in range(len(model.weights))]
            opt_values = [f[f"o{i}"] for i in range(len(model.optimizer.variables))]
            extra = len(f.files) - 1 - len(weights) - len(opt_values)
    except (OSError, EOFError, KeyError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable checkpoint ({e}); delete it to start over") from e
    if extra:
        raise RunDirError(f"{path}: checkpoint does not fit this model; delete it to start over")
    try:
        model.set_weights(weights)
    except ValueError as e:
        raise RunDirError(f"{path}: checkpoint does not fit this model ({e})") from e
    for variable, value in zip(model.optimizer.variables, opt_values, strict=True):
        variable.assign(value)
    return state


def run_clock(elapsed_before: float) -> Callable[[], float]:
    """Seconds of training so far: earlier sessions' plus this one's."""
    start = time.monotonic()
    return lambda: elapsed_before + time.monotonic() - start
