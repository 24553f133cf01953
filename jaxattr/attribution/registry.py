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
* `kind="paths"` is reserved for the built-in path methods (IG, SIG) that the driver flattens into
  examples x units x steps itself; new methods use the default `kind="batch"`.

Methods registered elsewhere are imported lazily through `PROVIDERS` (module paths), so the CLI lists
them without importing heavy modules first.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from jaxattr.errors import UserError


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method: the pure function plus how to drive it."""

    name: str
    fn: Callable[..., Any]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost: Callable[[Mapping[str, Any]], int] = lambda options: 1
    outputs: Callable[[Any], Mapping[str, Any]] | None = None
    kind: Literal["batch", "paths"] = "batch"
    description: str = ""
    validate: Callable[[Mapping[str, Any]], None] | None = None

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

# modules that register methods when imported (the built-in gradient methods and IBA)
PROVIDERS: tuple[str, ...] = ("jaxattr.attribution.iba", "jaxattr.attribution.lime", "jaxattr.attribution.baselines")


def register(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method under `spec.name`."""
    _REGISTRY[spec.name] = spec
    return spec


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, not {value!r}")


def _register_builtins() -> None:
    """Saliency, Grad×Input, GradientShap (batch kind) and IG, SIG (paths kind)."""
    from jaxattr.attribution import gradients as g
    # the package rebinds the name `sig` to the function, so import the module by its full name
    s = importlib.import_module("jaxattr.attribution.sig")

    def check_paths(o: Mapping[str, Any]) -> None:
        _check_int("steps", o["steps"], 1 if o["method"] == "gausslegendre" else 2)
        _check_choice("method", o["method"], g.METHODS)
        _check_choice("baseline", o["baseline"], g.BASELINES)
        if "unit" in o:
            _check_choice("unit", o["unit"], ("token", "word"))

    def check_shap(o: Mapping[str, Any]) -> None:
        _check_int("samples", o["samples"], 1)
        _check_choice("baseline", o["baseline"], g.BASELINES)
        if not float(o["stdev"]) >= 0:
            raise UserError(f"stdev must be >= 0, not {o['stdev']!r}")

    path_opts = {"steps": 50, "method": "gausslegendre", "baseline": "mask"}
    for spec in (
        MethodSpec("saliency", g.saliency, description="|dF/dx| summed over the embedding"),
        MethodSpec("gradxinput", g.grad_x_input, description="x * dF/dx summed over the embedding"),
        MethodSpec("gradientshap", g.gradient_shap, {"samples": 20, "stdev": 0.0, "baseline": "mask"},
                   cost=lambda o: o["samples"], validate=check_shap,
                   description="expected gradients with random points on the baseline-input path"),
        MethodSpec("ig", g.integrated_gradients, path_opts, cost=lambda o: o["steps"], kind="paths",
                   validate=check_paths, description="integrated gradients over word embeddings"),
        MethodSpec("sig", s.sequential_integrated_gradients, {**path_opts, "unit": "token"},
                   cost=lambda o: o["steps"], kind="paths", validate=check_paths,
                   description="sequential integrated gradients: one path per token (or word)"),
    ):
        _REGISTRY.setdefault(spec.name, spec)


def _load_providers() -> None:
    if "ig" not in _REGISTRY:
        _register_builtins()
    for mod in PROVIDERS:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            if getattr(e, "name", None) != mod:  # a provider that exists but fails to import is a bug
                raise


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
