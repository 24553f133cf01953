"""Training checkpoints with Orbax: async saves of the whole train state every N steps (for exact
resume), the best params by the dev metric, preemption handling, and early stopping.

Layout under `<run>/checkpoints/`: `latest/<step>/` holds `state` (params, optimizer state, step, RNG)
and `meta` (JSON: data position, early-stopping counters, model fingerprint); `best/<step>/` holds the
params with the best dev metric. The data order is a pure function of (seed, step), so the step alone
restores the position in the epoch permutation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxattr.errors import UserError
from jaxattr.training.state import TrainState


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with the shardings of `tree` (the restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@dataclasses.dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without improvement (patience 0 = never stop)."""

    patience: int = 0
    mode: str = "max"
    best: float | None = None
    best_step: int = -1
    bad_evals: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record a dev metric; True when it is the best so far."""
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Checkpointer:
    """Latest-state and best-params checkpoint managers for one run directory."""

    def __init__(self, directory: str | Path, *, save_every: int, metric: str, mode: str = "max",
                 keep: int = 2, async_save: bool = True) -> None:
        self.directory = Path(directory).absolute()
        self.save_every = max(1, int(save_every))
        self.metric = metric
        self.latest = ocp.CheckpointManager(
            self.directory / "latest",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 create=True))
        self.best = ocp.CheckpointManager(
            self.directory / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m[metric], best_mode=mode,
                                                 enable_async_checkpointing=async_save, create=True))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def should_save(self, step: int) -> bool:
        return step % self.save_every == 0

    def save(self, step: int, state: TrainState, meta: dict[str, Any], force: bool = False) -> None:
        """Save the full state at `step` (asynchronously: training continues while it is written)."""
        if self.latest.latest_step() == step:
            return
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, target: TrainState, fingerprint: dict[str, Any]) -> tuple[TrainState, dict[str, Any]] | None:
        """The latest saved (state, meta), or None when there is none. A checkpoint written for another
        model or run setup raises a one-line UserError."""
        step = self.latest.latest_step()
        if step is None:
            return None
        meta = self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        theirs = meta.get("fingerprint", {})
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        if diff:
            raise UserError(f"{self.directory}: the checkpoint there comes from another model or setup "
                            f"(differs in {', '.join(diff)}); use a new output_dir or resume=false")
        try:
            restored = self.latest.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_like(target))))
        except (ValueError, KeyError) as e:
            raise UserError(f"{self.directory}: checkpoint at step {step} does not fit this model "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        return restored["state"], meta

    def save_best(self, step: int, params: Any, value: float) -> None:
        """Keep `params` if `value` is the best dev metric so far (the manager keeps one)."""
        self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                       metrics={self.metric: float(value)}, force=True)

    def restore_best(self, target_params: Any) -> Any | None:
        self.best.wait_until_finished()
        step = self.best.best_step()
        if step is None:
            return None
        return self.best.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_like(target_params))))["params"]

    def reached_preemption(self, step: int) -> bool:
        """True when the job was told to stop (SIGTERM / preemption notice, synchronised across hosts)."""
        return bool(self.latest.reached_preemption(step))

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
