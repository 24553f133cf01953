"""Training: the engine (pure, jitted, data-parallel steps with a pluggable loss), Orbax checkpoints with
exact resume, AD-DROP, and the fine-tuning run driven by `TrainConfig`. DACT / DeeBERT plug in through
`jaxattr.training.engine` (loss_fn hook, `Method`); the run's per-step work (logging, evaluation,
checkpoints, early stopping, the caller's own) is hooks (`jaxattr.training.hooks`).

Importing this package imports every method module with a settings section (addrop, dact), which
registers it with `jaxattr.training.config.register_section`: a config built from any training module
knows them all.
"""

from jaxattr.training.addrop import ADDropConfig
from jaxattr.training.config import TrainConfig, load_config
from jaxattr.training.dact import DactConfig
from jaxattr.training.engine import Engine, default_loss_fn, make_eval_step, make_train_step
from jaxattr.training.state import TrainState, init_state, make_optimizer

__all__ = [
    "ADDropConfig", "DactConfig", "Engine", "TrainConfig", "TrainState", "default_loss_fn", "init_state", "load_config",
    "make_eval_step", "make_optimizer", "make_train_step",
]
