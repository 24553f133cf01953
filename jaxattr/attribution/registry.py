"""Attribution methods by name, so the batched driver and the CLI are method-agnostic.

How a method registers (one call, at import time of the module that defines it)::

    from jaxattr.attribution.registry import MethodSpec, register

    register(MethodSpec(
        name="iba",
        fn=iba,                                  # pure: fn(params, cfg, batch, **context, **options)
        options={"layer": 9, "beta": 1e-5, "noise": "sequence", "samples": 10, "steps": 10},
        cost=lambda o: o["samples"],             # rows of work per example (the memory multiplier)
        outputs=lambda r: {"scores": r.scores, "layers": ...},   # optional, see below
        description="information bottleneck on the output of a layer",
    ))

* `fn` gets a padded batch dict (`input_ids`, `attention_mask`, `token_type_ids`, `word_ids`, all
  [B, T] int32) and, among the *context* keywords `target` ([B] int32: the class to explain, already
  resolved by the driver), `key` (a PRNG key for the batch), `mask_id`, `pad_id`, `output`
  ("logit"/"prob") and `chunk` (rows per `lax.map` step for a memory bound), only those that its
  signature names. Declared `options` are passed as keywords (the CLI's `--steps/--layer/--beta/
  --noise/--samples/...`; giving an option a method does not declare is a user error). Options are
  static (hashable) under `jit`.
* `cost(options)` is how many forward+backward rows of the sequence length one example costs; the
  driver puts `tokens_per_batch // (T * cost)` examples (at least 1) per device in a batch.
* `outputs(result)` maps fn's result to a dict with `scores` ([B, T], or [K, B, T] with `layers` a
  list of K labels: the driver then writes one row per example and layer with a "layer" field) and
  optionally `delta` ([B]). The default reads `result.scores` and `result.delta` when present.
* `paths` (a `Paths`) makes a *path method* (IG, SIG): instead of calling `fn` on batches, the driver
  streams examples x units x steps gradient rows through `row_contributions` in fixed-size chunks and
  accumulates per-example sums on the host, so one 512-token SIG example never needs one huge batch.
  The method declares how positions group into units (interpolated together from the baseline while
  the rest stays at x) and how raw sums become scores and a completeness gap; its options must include
  `steps`, `method` (the quadrature rule) and `baseline`, which the driver reads. `fn` stays the pure
  function a user calls under their own `jit`.
* `token_models=True` for a method whose `fn` takes a token model's span target ([B, T] classes per
  position, -1 elsewhere) through `gradients.predict` / `explained_output`; others are refused on token models.
* `windows=False` for a method that intervenes inside the encoder (`ig_embedding`: IG over the post-LayerNorm
  embedding): it is refused on windowed long documents (`--long window`), which expose only the pooled logits.

Methods registered elsewhere are imported lazily through `PROVIDERS` (module paths), so the CLI lists
them without importing heavy modules first.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from jaxattr.errors import UserError


@dataclasses.dataclass(frozen=True)
class Paths:
    """How the driver streams a path method (see the module docstring).

    `unit_ids(batch, options)`: [B, T] unit index per position (-1: never moved, e.g. special tokens and
    padding); positions sharing an index form one path. `finish(raw, units, f_gap)`: raw [T] summed row
    contributions (float64), units [U, T] bool masks in index order, f_gap [U] = F(x) - F(baseline of
    unit u) -> (scores [T], completeness delta).
    """

    unit_ids: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    finish: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method: the pure function plus how to drive it."""

    name: str
    fn: Callable[..., Any]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost: Callable[[Mapping[str, Any]], int] = lambda options: 1
    outputs: Callable[[Any], Mapping[str, Any]] | None = None
    paths: Paths | None = None
    description: str = ""
    validate: Callable[[Mapping[str, Any]], None] | None = None
    windows: bool = True  # runs on windowed long documents (`models/windowed.py`): needs only the model's logits
    token_models: bool = False  # explains a token model's span targets ([B, T] classes, `explained_output`)
    label: str = ""  # the name tables and plots print (`label(name)`)
    base: str = ""  # a variant: the registered method it configures ("" for a method of its own)
    explain: int | None = None  # a variant that explains this class whatever the run's target (a reference's)

    @property
    def family(self) -> str:
        """The registered method whose function this runs (a variant's `base`, else its own name)."""
        return self.base or self.name

    @property
    def kind(self) -> Literal["batch", "paths"]:
        """"paths" for a path method (streamed by the driver), "batch" for any other."""
        return "batch" if self.paths is None else "paths"

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Declared defaults overridden by `given` (None = not given); unknown options are a UserError."""
        unknown = [k for k, v in given.items() if v is not None and k not in self.options]
        if unknown:
            declared = ", ".join(sorted(self.options)) or "none"
            raise UserError(f"method {self.name!r} takes no option(s) {', '.join(sorted(unknown))} "
                            f"(its options: {declared})")
        out = dict(self.options)
        out.update({k: v for k, v in given.items() if v is not None})
        if self.validate is not None:
            self.validate(out)
        return out


_REGISTRY: dict[str, MethodSpec] = {}

# The one table of labels (tables, plots, reports) for the methods registered in PROVIDERS.
LABELS: dict[str, str] = {"random": "Random", "saliency": "Saliency", "gradxinput": "Grad×Input",
                          "gradientshap": "GradientShap", "ig": "IG", "sig": "SIG", "iba": "IBA", "lime": "LIME",
                          "ig_embedding": "IG (embedding output)"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named configuration of a registered method: fixed option defaults and, for a paper's reference
    comparator, the class it always explains."""

    base: str
    label: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    explain: int | None = None


# Variants every command accepts like methods (`--methods sig_pad,ig_ref`). The IBA paper's reference code
# (Jiang et al. 2020) explains softmax[:, 0] with IG over the embedding output from [PAD], and label 1 (the
# lime package's default) with LIME's bag of words, whatever the evaluated target; the other rows isolate
# one of those differences each (issue 32's factor table).
VARIANTS: dict[str, Variant] = {
    "sig_pad": Variant("sig", "SIG (pad)", {"baseline": "pad"}),
    "ig_pad": Variant("ig", "IG (pad)", {"baseline": "pad"}),
    "ig_class0": Variant("ig", "IG (class 0)", explain=0),
    "ig_ref": Variant("ig_embedding", "IG (reference: embedding output from [PAD], class 0)", {"baseline": "pad"},
                      explain=0),
    "lime_label1": Variant("lime", "LIME (label 1)", explain=1),
    "lime_bow": Variant("lime", "LIME (bag of words)", {"unit": "bow"}),
    "lime_ref": Variant("lime", "LIME (reference: bag of words, label 1)", {"unit": "bow"}, explain=1),
}

# modules that register methods when imported
PROVIDERS: tuple[str, ...] = ("jaxattr.attribution.gradients", "jaxattr.attribution.sig", "jaxattr.attribution.iba",
                              "jaxattr.attribution.lime", "jaxattr.attribution.baselines")


def register(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method under `spec.name`."""
    _REGISTRY[spec.name] = spec
    return spec


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """UserError unless `value` is one of `choices` (for a spec's `validate`)."""
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def check_int(name: str, value: Any, low: int) -> None:
    """UserError unless `value` is an integer >= `low` (for a spec's `validate`)."""
    if not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, not {value!r}")


def _load_providers() -> None:
    for mod in PROVIDERS:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            if getattr(e, "name", None) != mod:  # a provider that exists but fails to import is a bug
                raise
    for name, v in VARIANTS.items():
        if name not in _REGISTRY and v.base in _REGISTRY:
            register(variant(name, v))


def variant(name: str, v: Variant) -> MethodSpec:
    """The spec of variant `v`: its base's, with `v`'s option defaults, label and explained class. A variant that
    explains a fixed class (a reference comparator) takes no span, so it is refused on token models."""
    spec = _REGISTRY[v.base]
    unknown = set(v.options) - set(spec.options)
    if unknown:
        raise ValueError(f"variant {name!r}: {v.base} has no option(s) {sorted(unknown)}")
    return dataclasses.replace(spec, name=name, options={**spec.options, **v.options}, label=v.label,
                               base=v.base, explain=v.explain, token_models=spec.token_models and v.explain is None)


def label(name: str) -> str:
    """What a table prints for method `name` (a per-layer key `name@layer` gets "(layer N)")."""
    base, _, layer = str(name).partition("@")
    _load_providers()
    spec = _REGISTRY.get(base)
    text = (spec.label if spec is not None else "") or LABELS.get(base, base)
    return f"{text} (layer {layer})" if layer else text


def names() -> list[str]:
    """Every registered method name."""
    _load_providers()
    return sorted(_REGISTRY)


def get(name: str) -> MethodSpec:
    """The spec of a method; an unknown name is a UserError listing the known ones."""
    _load_providers()
    if name not in _REGISTRY:
        raise UserError(f"unknown attribution method {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_token_models(name: str) -> None:
    """UserError unless method `name` explains token-classification models (`token_models`)."""
    if not get(name).token_models:
        known = sorted(n for n, spec in _REGISTRY.items() if spec.token_models)
        raise UserError(f"{name} does not explain token-classification models (yet); use {', '.join(known)}")


def check_windows(names: Sequence[str]) -> None:
    """UserError for the first method that cannot run on windowed long documents."""
    for name in names:
        if not get(name).windows:
            raise UserError(f"--long window: {name} works inside the encoder, which windows do not expose; use "
                            "--long truncate or native")
