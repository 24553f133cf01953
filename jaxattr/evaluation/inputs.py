"""What the evaluations run on: a model (`as_model`) and tokenised examples of a dataset checked against it
(`load_examples` for `jaxattr evaluate`, `load_input_examples` for `jaxattr degradation`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from jaxattr.errors import UserError


def as_model(model: Any) -> Any:
    """A `jaxattr.models.loading.Model`, or a model spec string loaded with `load_model` (a sequence or a token
    classifier: `explained_examples` turns a token model's texts into its entities)."""
    from jaxattr.models.loading import Model, load_model

    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(str(model))
    raise UserError(f"model must be a jaxattr Model or a model spec string, not {type(model).__name__}")


def check_entity_settings(model: Any, target: str, entities: str, methods: Sequence[str] = ()) -> None:
    """One-line refusals of settings a model's task does not take, before any data loads or work starts: a token
    model explains its predicted entities (no other target) with the methods that explain spans
    (`registry.check_token_models`), and `entities` selects among a token model's entities alone."""
    from jaxattr.attribution import registry

    if model.cfg.task != "token":
        if entities != "all":
            raise UserError(f"--entities {entities}: entities come from a token-classification model (--task token)")
        return
    if target != "predicted":
        raise UserError("--task token explains the predicted entities; --target does not apply")
    for name in methods:
        registry.check_token_models(name)


def explained_examples(model: Any, examples: Sequence[Mapping[str, Any]], *, target: str = "predicted",
                       entities: str = "all") -> list[dict[str, Any]]:
    """What the evaluations explain: a sequence classifier's examples as they are; a token model's one example per
    predicted entity (`attribution.entities.entity_examples`, `entities`: "all" or one label), each carrying
    its span target `token_target`, which every metric reads. Examples that carry one already are kept (those of
    the label `entities` names)."""
    from jaxattr.attribution.entities import entity_examples

    check_entity_settings(model, target, entities)
    if model.cfg.task != "token":
        return list(examples)
    if examples and all("token_target" in ex for ex in examples):
        return [dict(ex) for ex in examples if entities in ("all", (ex.get("entity") or {}).get("label"))]
    return entity_examples(model.params, model.cfg, examples, pad_id=model.pad_id, select=entities)


def _check_against_model(ds: Any, model: Any, data: str, need_labels: bool, label_column: str | None) -> None:
    from jaxattr.data.datasets import label_names_of

    cfg = model.cfg
    if cfg.problem_type != "classification":
        raise UserError("attribution tables need a classification model (the metrics use class probabilities)")
    if cfg.task == "token":  # its targets are the predicted entities' tags, not the dataset's labels
        return
    has_labels = "label" in ds.column_names
    if need_labels and not has_labels:
        raise UserError(f"dataset {data!r} has no labels (column {label_column!r}); --target gold needs them")
    names = label_names_of(ds) if has_labels else None
    if names is not None and len(names) != cfg.num_labels:
        raise UserError(f"the model has {cfg.num_labels} labels but dataset {data!r} has {len(names)} classes "
                        f"({', '.join(names)}); evaluate a model trained on this dataset")
    if has_labels and names is None:
        labels = [v for v in ds["label"] if v is not None and v >= 0]
        if labels and max(labels) >= cfg.num_labels:
            raise UserError(f"dataset {data!r} has label {max(labels)} but the model has {cfg.num_labels} labels")


def _load_spec(data: str, split: str, seed: int, text_column: str, label_column: str | None,
               need_labels: bool, rationale_column: str | None = None) -> Any:
    from jaxattr.data.datasets import datasets, is_corpus, load_dataset_spec

    spec_split = split if is_corpus(data) or data.startswith("hf:") else None
    load = lambda labels: load_dataset_spec(data, spec_split, seed=seed, text_column=text_column,
                                            label_column=label_column if labels else None,
                                            rationale_column=rationale_column)
    try:
        ds = load(bool(label_column))
    except UserError:
        if not label_column:
            raise
        ds = load(False)  # a dataset that fails without labels too: its own error is the right one
        if need_labels:
            raise UserError(f"dataset {data!r} has no labels (column {label_column!r}); --target gold needs them"
                            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"dataset {data!r} has splits {list(ds)}, not {split!r}; pass --split")
        ds = ds[split]
    return ds


def load_examples(model: Any, data: Any, *, split: str = "test", examples: int | None = None,
                  max_length: int = 128, seed: int = 0, need_labels: bool = False, text_column: str = "text",
                  label_column: str | None = "label", rationale_column: str | None = None) -> list[dict[str, Any]]:
    """Tokenised examples of `data`: a list of texts, a `datasets.Dataset`, or a spec string (corpus name,
    CSV/JSONL/Parquet file, `hf:NAME[:CONFIG]`; `split` picks a corpus split).

    `examples=None` takes every row in order; an int N the first N of a seeded shuffle (0 = all, shuffled:
    what `jaxattr evaluate --examples` does). The dataset is checked against the model (label count;
    labels present when `need_labels`). `rationale_column` names a column of human rationales (a table,
    a Hub or a `datasets.Dataset` column; forms: `plausibility.token_rationale`): each example gets its
    token mask as `rationale`."""
    from jaxattr.data.datasets import datasets, tokenize_dataset
    from jaxattr.evaluation.plausibility import token_rationale

    model = as_model(model)
    if model.cfg.task == "token":  # a token model explains its predicted entities: no sequence labels to check
        label_column = None
    if isinstance(data, (str, os.PathLike)):
        name = str(data)
        ds = _load_spec(name, split, seed, text_column, label_column, need_labels, rationale_column)
    elif isinstance(data, Sequence) and all(isinstance(t, str) for t in data):
        name = "texts"
        ds = datasets.Dataset.from_dict({"text": list(data)})
    elif isinstance(data, datasets.Dataset):
        name = "dataset"
        ds = data
        renames = {c: k for c, k in ((text_column, "text"), (label_column, "label"), (rationale_column, "rationale"))
                   if c and c != k and c in ds.column_names}
        ds = ds.rename_columns(renames) if renames else ds
        if "text" not in ds.column_names:
            raise UserError(f"the dataset has no text column {text_column!r} (columns: {ds.column_names})")
    else:
        raise UserError(f"data must be a list of texts, a datasets.Dataset or a dataset spec, not "
                        f"{type(data).__name__}")
    if rationale_column and "rationale" not in ds.column_names:
        raise UserError(f"dataset {name!r} has no rationale column {rationale_column!r} (columns: {ds.column_names})")
    _check_against_model(ds, model, name, need_labels, label_column)
    if examples is not None:
        n = len(ds) if examples <= 0 else min(examples, len(ds))
        ds = ds.shuffle(seed=seed).select(range(n))
    if len(ds) == 0:
        raise UserError(f"dataset {name!r} is empty")
    exs = tokenize_dataset(ds, model.tokenizer, max_length=min(max_length, model.cfg.max_position_embeddings))
    if rationale_column:
        for ex, value in zip(exs, ds["rationale"]):
            try:
                ex["rationale"] = token_rationale(ex, value)
            except UserError as e:
                raise UserError(f"dataset {name!r}, example {ex['id']!r}: {e}") from None
    return exs


# ----------------------------------------------------------------------------------------------
# Metrics per (method, example)



def load_input_examples(model: Any, spec: str, *, split: str | None = None, limit: int = 100,
                        text_column: str = "text", label_column: str | None = "label", need_labels: bool = False,
                        max_length: int = 512) -> list[dict[str, Any]]:
    """The first `limit` rows (0 = all) of a dataset spec, tokenised (what `jaxattr degradation --input` reads)."""
    from jaxattr.data.datasets import is_corpus, load_input_dataset, tokenize_dataset

    split = split or ("test" if is_corpus(spec) else None)
    ds = load_input_dataset(spec, split, limit=limit, text_column=text_column,
                            label_column=label_column if need_labels else None, label_names=model.cfg.label_names)
    return tokenize_dataset(ds, model.tokenizer, max_length=min(max_length, model.cfg.max_length))
