"""Hugging Face checkpoint directories <-> jaxattr parameters (no torch needed for safetensors).

transformers v5 removed its Flax models and the PyTorch->Flax converters, so the name mapping lives
here. One table per family maps HF tensor names to paths in our parameter pytree; import and export
both read it, so they cannot drift apart. `...ForSequenceClassification` checkpoints load as sequence
classifiers, `...ForTokenClassification` ones as token classifiers (`EncoderConfig.task == "token"`: no
pooler, a `classifier` Linear on every position; ModernBERT's keeps its `head`), and export to the same.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxattr.errors import UserError
from jaxattr.models import deberta, modernbert
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, init_params

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "spm.model")
_PREFIX = {"bert": "bert", "roberta": "roberta", "distilbert": "distilbert", "electra": "electra", "albert": "albert",
           "deberta-v2": "deberta", "modernbert": "model"}
_ARCH = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification",
         "distilbert": "DistilBertForSequenceClassification", "electra": "ElectraForSequenceClassification",
         "albert": "AlbertForSequenceClassification", "deberta-v2": "DebertaV2ForSequenceClassification",
         "xlm-roberta": "XLMRobertaForSequenceClassification", "camembert": "CamembertForSequenceClassification",
         "modernbert": "ModernBertForSequenceClassification"}
# HF model_types whose weights and computation are another family's, tensor for tensor (kept for export)
ALIASES = {"xlm-roberta": "roberta", "camembert": "roberta"}
TOKEN_HEAD = "ForTokenClassification"  # the architecture suffix of a token-classification checkpoint


def architecture(cfg: EncoderConfig) -> str:
    """The HF class name `cfg` exports as: `...ForSequenceClassification` or `...ForTokenClassification`."""
    name = _ARCH[cfg.hf_model_type or cfg.family]
    return name.replace("ForSequenceClassification", TOKEN_HEAD) if cfg.task == "token" else name


def task_of(hf: dict[str, Any]) -> str:
    """"token" when the config's `architectures` names a `...ForTokenClassification`, else "sequence"."""
    return "token" if any(a.endswith(TOKEN_HEAD) for a in hf.get("architectures") or []) else "sequence"


class CheckpointError(UserError):
    """A checkpoint directory that cannot be read as the expected model (message names the file/tensor)."""


def config_from_hf(hf: dict[str, Any], task: str | None = None) -> EncoderConfig:
    """Translate a HF `config.json` dict into an EncoderConfig; `task` None: from its `architectures`
    (`task_of`). A token head is single-label classification over `id2label` (HF's token heads ignore
    problem_type; "regression" is refused rather than guessed)."""
    hf_type = hf.get("model_type")
    family = ALIASES.get(hf_type, hf_type)
    if family not in _PREFIX:
        raise CheckpointError(f"unsupported architecture model_type={hf_type!r}; supported: "
                              f"{sorted([*_PREFIX, *ALIASES])}")
    alias = hf_type if hf_type in ALIASES else None
    pos = hf.get("position_embedding_type") or "absolute"
    if pos != "absolute":  # relative_key(_query) would need the relative-distance embeddings: refuse, never ignore
        raise CheckpointError(f"position_embedding_type={pos!r} is not supported (only 'absolute')")
    if hf.get("problem_type") == "multi_label_classification":
        raise CheckpointError("problem_type='multi_label_classification' is not supported (single-label "
                              "classification or regression); its sigmoid targets would be explained as softmax")
    task = task_of(hf) if task is None else task
    if task == "token" and hf.get("problem_type") == "regression":
        raise CheckpointError("problem_type='regression' on a token-classification head is not supported (a "
                              "token head classifies each token over id2label)")
    id2label = hf.get("id2label")
    num_labels = len(id2label) if id2label else hf.get("num_labels", 2)
    regression = task == "sequence" and (hf.get("problem_type") == "regression" or num_labels == 1)
    labels = None
    if id2label and not regression:
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
        if all(lab == f"LABEL_{i}" for i, lab in enumerate(labels)):
            labels = None
    if family == "modernbert":
        try:
            kwargs = modernbert.config_kwargs(hf)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        return EncoderConfig(**kwargs, num_labels=1 if regression else num_labels, label_names=labels,
                             problem_type="regression" if regression else "classification", task=task)
    if family == "distilbert":
        return EncoderConfig(
            family="distilbert", vocab_size=hf["vocab_size"], hidden_size=hf["dim"], num_layers=hf["n_layers"],
            num_heads=hf["n_heads"], intermediate_size=hf["hidden_dim"],
            max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=0, layer_norm_eps=1e-12,
            hidden_act=hf.get("activation", "gelu"), pad_token_id=hf.get("pad_token_id", 0) or 0,
            num_labels=1 if regression else num_labels, problem_type="regression" if regression else "classification",
            dropout_rate=hf.get("dropout", 0.1), attention_dropout_rate=hf.get("attention_dropout", 0.1),
            classifier_dropout_rate=hf.get("seq_classif_dropout"), label_names=labels, task=task)
    emb = hf.get("embedding_size") if family in ("electra", "albert") else None
    groups, classifier_dropout, extra = None, hf.get("classifier_dropout"), {}
    if family == "albert":
        if hf.get("inner_group_num", 1) != 1:
            raise CheckpointError(f"inner_group_num={hf['inner_group_num']} is not supported (only 1: one block "
                                  "per layer group)")
        groups, classifier_dropout = hf.get("num_hidden_groups", 1), hf.get("classifier_dropout_prob", 0.1)
    if family == deberta.FAMILY:
        try:
            extra = deberta.hf_fields(hf)
        except deberta.UnsupportedSwitch as e:
            raise CheckpointError(str(e)) from None
        emb = extra.pop("embedding_size")
    fields = dict(
        family=family, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        embedding_size=emb if emb and emb != hf["hidden_size"] else None,
        num_layers=hf["num_hidden_layers"], num_layer_groups=groups, num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_act=hf.get("hidden_act", "gelu"), pad_token_id=hf.get("pad_token_id", 0) or 0,
        num_labels=1 if regression else num_labels, problem_type="regression" if regression else "classification",
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout_rate=classifier_dropout, label_names=labels, hf_model_type=alias, task=task)
    return EncoderConfig(**(fields | extra))


def config_to_hf(cfg: EncoderConfig) -> dict[str, Any]:
    """A HF `config.json` dict for `cfg` with a sequence- or token-classification architecture (`architecture`)."""
    labels = cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
    model_type = cfg.hf_model_type or cfg.family
    common = {"architectures": [architecture(cfg)], "model_type": model_type, "vocab_size": cfg.vocab_size,
              "max_position_embeddings": cfg.max_position_embeddings, "pad_token_id": cfg.pad_token_id,
              "id2label": {str(i): lab for i, lab in enumerate(labels)},
              "label2id": {lab: i for i, lab in enumerate(labels)},
              "problem_type": "regression" if cfg.problem_type == "regression" else "single_label_classification"}
    if cfg.family == "modernbert":
        return common | modernbert.to_hf(cfg)
    if cfg.family == "distilbert":
        return common | {"dim": cfg.hidden_size, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads,
                         "hidden_dim": cfg.intermediate_size, "activation": cfg.hidden_act,
                         "dropout": cfg.dropout_rate, "attention_dropout": cfg.attention_dropout_rate,
                         "seq_classif_dropout": cfg.classifier_dropout_rate or cfg.dropout_rate,
                         "sinusoidal_pos_embds": False}
    out = common | {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
                    "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
                    "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
                    "hidden_act": cfg.hidden_act, "hidden_dropout_prob": cfg.dropout_rate,
                    "attention_probs_dropout_prob": cfg.attention_dropout_rate,
                    "classifier_dropout": cfg.classifier_dropout_rate}
    if cfg.family in ("electra", "albert"):
        out["embedding_size"] = cfg.emb_size
    if cfg.family == "albert":
        out |= {"num_hidden_groups": cfg.num_param_layers, "inner_group_num": 1,
                "classifier_dropout_prob": out.pop("classifier_dropout") or cfg.dropout_rate}
    if cfg.family == deberta.FAMILY:
        out = {k: v for k, v in out.items() if k != "classifier_dropout"} | deberta.hf_config(cfg)
    return out


def _name_table(cfg: EncoderConfig) -> Iterator[tuple[str, tuple[Any, ...], bool]]:
    """(HF name without model prefix or with head prefix, our param path, transpose?) for every tensor.

    Layer paths carry the layer index as their second element; head names start with '@' (no prefix).
    """
    if cfg.family == "modernbert":
        yield from modernbert.name_table(cfg)
        return
    if cfg.family == deberta.FAMILY:
        yield from _deberta_names(cfg)
        return
    yield "embeddings.word_embeddings.weight", ("embeddings", "word", "embedding"), False
    yield "embeddings.position_embeddings.weight", ("embeddings", "position", "embedding"), False
    if cfg.type_vocab_size:
        yield "embeddings.token_type_embeddings.weight", ("embeddings", "token_type", "embedding"), False
    yield "embeddings.LayerNorm.weight", ("embeddings", "norm", "scale"), False
    yield "embeddings.LayerNorm.bias", ("embeddings", "norm", "bias"), False
    if cfg.projects_embeddings:
        name = "encoder.embedding_hidden_mapping_in" if cfg.family == "albert" else "embeddings_project"
        yield name + ".weight", ("embeddings", "project", "kernel"), True
        yield name + ".bias", ("embeddings", "project", "bias"), False
    if cfg.family == "distilbert":
        names = {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
                 "attn_out": "attention.out_lin", "attn_norm": "sa_layer_norm", "ffn_in": "ffn.lin1",
                 "ffn_out": "ffn.lin2", "out_norm": "output_layer_norm"}
        layer_fmt = "transformer.layer.{i}."
    elif cfg.family == "albert":
        names = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
                 "attn_out": "attention.dense", "attn_norm": "attention.LayerNorm", "ffn_in": "ffn",
                 "ffn_out": "ffn_output", "out_norm": "full_layer_layer_norm"}
        layer_fmt = "encoder.albert_layer_groups.{i}.albert_layers.0."
    else:
        names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                 "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "out_norm": "output.LayerNorm"}
        layer_fmt = "encoder.layer.{i}."
    for i in range(cfg.num_param_layers):
        for ours, theirs in names.items():
            is_norm = ours.endswith("norm")
            base = layer_fmt.format(i=i) + theirs
            yield base + ".weight", ("layers", i, ours, "scale" if is_norm else "kernel"), not is_norm
            yield base + ".bias", ("layers", i, ours, "bias"), False
    if cfg.task == "token":  # dropout + `classifier` on every position: no pooler, no dense layer
        yield "@classifier.weight", ("head", "out", "kernel"), True
        yield "@classifier.bias", ("head", "out", "bias"), False
        return
    head = {"bert": ("pooler.dense", "@classifier"), "albert": ("pooler", "@classifier"),
            "roberta": ("@classifier.dense", "@classifier.out_proj"),
            "electra": ("@classifier.dense", "@classifier.out_proj"),
            "distilbert": ("@pre_classifier", "@classifier")}[cfg.family]
    for ours, theirs in zip(("dense", "out"), head):
        yield theirs + ".weight", ("head", ours, "kernel"), True
        yield theirs + ".bias", ("head", ours, "bias"), False


def _deberta_names(cfg: EncoderConfig) -> Iterator[tuple[str, tuple[Any, ...], bool]]:
    """`_name_table` for DeBERTa-v2/v3: optional absolute positions, a bias-free embed_proj, the shared
    relative embeddings (+ LayerNorm) under encoder., per-layer *_proj names, the ContextPooler head."""
    yield "embeddings.word_embeddings.weight", ("embeddings", "word", "embedding"), False
    if cfg.position_biased_input:
        yield "embeddings.position_embeddings.weight", ("embeddings", "position", "embedding"), False
    if cfg.type_vocab_size:
        yield "embeddings.token_type_embeddings.weight", ("embeddings", "token_type", "embedding"), False
    if cfg.emb_size != cfg.hidden_size:
        yield "embeddings.embed_proj.weight", ("embeddings", "project", "kernel"), True
    yield "embeddings.LayerNorm.weight", ("embeddings", "norm", "scale"), False
    yield "embeddings.LayerNorm.bias", ("embeddings", "norm", "bias"), False
    if cfg.relative_attention:
        yield "encoder.rel_embeddings.weight", ("relative", "embedding"), False
        if cfg.norm_rel_ebd:
            yield "encoder.LayerNorm.weight", ("relative", "norm", "scale"), False
            yield "encoder.LayerNorm.bias", ("relative", "norm", "bias"), False
    names = {"query": "attention.self.query_proj", "key": "attention.self.key_proj",
             "value": "attention.self.value_proj", "attn_out": "attention.output.dense",
             "attn_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense", "ffn_out": "output.dense",
             "out_norm": "output.LayerNorm"}
    if cfg.relative_attention and not cfg.share_att_key:
        names |= {"pos_key": "attention.self.pos_key_proj"} if "c2p" in cfg.pos_att_type else {}
        names |= {"pos_query": "attention.self.pos_query_proj"} if "p2c" in cfg.pos_att_type else {}
    for i in range(cfg.num_layers):
        for ours, theirs in names.items():
            is_norm = ours.endswith("norm")
            base = f"encoder.layer.{i}.{theirs}"
            yield base + ".weight", ("layers", i, ours, "scale" if is_norm else "kernel"), not is_norm
            yield base + ".bias", ("layers", i, ours, "bias"), False
    head = (("out", "@classifier"),) if cfg.task == "token" else (("dense", "@pooler.dense"), ("out", "@classifier"))
    for ours, theirs in head:
        yield theirs + ".weight", ("head", ours, "kernel"), True
        yield theirs + ".bias", ("head", ours, "bias"), False


def _read_state_dict(hf_dir: Path) -> dict[str, np.ndarray]:
    st, binf = hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin"
    index = hf_dir / "model.safetensors.index.json"
    if st.exists():
        sd = _read_safetensors(st)
    elif index.exists():  # sharded: the index maps every tensor to its shard file
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise CheckpointError(f"{index}: not a safetensors index (no weight_map)") from None
        sd = {}
        for shard in shards:
            if not (hf_dir / shard).exists():
                raise CheckpointError(f"{index} names the shard {shard}, which is missing")
            sd.update(_read_safetensors(hf_dir / shard))
    elif binf.exists():
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{binf}: reading .bin checkpoints needs torch; convert to safetensors") from None
        sd = {k: v.float().numpy() for k, v in torch.load(binf, map_location="cpu", weights_only=True).items()}
    else:
        raise CheckpointError(f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    # Old TF-converted checkpoints use gamma/beta for LayerNorm.
    return {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"):
            np.asarray(v, np.float32) for k, v in sd.items()}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None


def params_from_state_dict(cfg: EncoderConfig, sd: dict[str, np.ndarray], *, seed: int = 0,
                           source: str = "state dict") -> Params:
    """Map a HF state dict onto our params; a missing classification head is initialised from `seed`."""
    prefix = _PREFIX[cfg.family] + "."
    has_prefix = any(k.startswith(prefix) for k in sd)
    params = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(seed)))
    layers = jax.tree.map(np.array, params["layers"])  # writable copies, one slice per layer
    missing_head = []
    for name, path, transpose in _name_table(cfg):
        key = name[1:] if name.startswith("@") else (prefix + name if has_prefix else name)
        if key not in sd:
            if path[0] == "head" and path[1] != "final_norm":  # ModernBERT's final_norm is the encoder's
                missing_head.append(key)
                continue
            raise CheckpointError(f"{source}: tensor {key!r} is missing")
        value = sd[key].T if transpose else sd[key]
        hf_shape = lambda shape, t=transpose: tuple(reversed(shape)) if t else tuple(shape)  # as HF stores it
        if path[0] == "layers":
            target = layers[path[2]][path[3]]
            if value.shape != target.shape[1:]:
                raise CheckpointError(f"{source}: tensor {key!r} has shape {sd[key].shape}, "
                                      f"expected {hf_shape(target.shape[1:])}")
            target[path[1]] = value
        else:
            node = params
            for p in path[:-1]:
                node = node[p]
            if value.shape != node[path[-1]].shape:
                raise CheckpointError(f"{source}: tensor {key!r} has shape {sd[key].shape}, "
                                      f"expected {hf_shape(node[path[-1]].shape)}")
            node[path[-1]] = value
    if missing_head:
        log.warning("%s has no classification head (%s); initialised it randomly with seed %d",
                    source, ", ".join(missing_head), seed)
    params["layers"] = layers
    return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def params_to_state_dict(cfg: EncoderConfig, params: Params) -> dict[str, np.ndarray]:
    """Our params as a HF `...ForSequenceClassification` (or, task "token", `...ForTokenClassification`)
    state dict (float32 numpy)."""
    prefix = _PREFIX[cfg.family] + "."
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    sd = {}
    for name, path, transpose in _name_table(cfg):
        if path[0] == "layers":
            value = params["layers"][path[2]][path[3]][path[1]]
        else:
            value = params
            for p in path:
                value = value[p]
        sd[name[1:] if name.startswith("@") else prefix + name] = np.ascontiguousarray(value.T if transpose else value)
    return sd


# `architectures` entries whose weights jaxattr runs as they are (a bare encoder gets a new seeded head)
RUNNABLE_ARCHITECTURES = ("ForSequenceClassification", TOKEN_HEAD, "Model")


def load_hf_dir(hf_dir: str | Path, *, seed: int = 0, num_labels: int | None = None,
                problem_type: str | None = None, task: str | None = None) -> tuple[EncoderConfig, Params]:
    """Read a HF checkpoint directory into (config, params). Tokenizer: `jaxattr.models.load_tokenizer`.

    `num_labels`/`problem_type` override the config (e.g. a fresh head on a base encoder). `task`
    ("sequence" or "token"): the head to build; None = the checkpoint's (`...ForTokenClassification` ->
    "token", else "sequence"). Asking for the other task gives a fresh seeded head of that kind.
    """
    hf_dir = Path(hf_dir)
    cfg_path = hf_dir / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{cfg_path}: file not found")
    try:
        hf_cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: malformed JSON ({e})") from None
    if task not in (None, "sequence", "token"):
        raise ValueError(f"task {task!r}: use 'sequence', 'token' or None")
    cfg = config_from_hf(hf_cfg, task)
    heads = [a for a in hf_cfg.get("architectures") or [] if not a.endswith(RUNNABLE_ARCHITECTURES)]
    if heads and num_labels is None and problem_type is None:
        raise CheckpointError(f"{hf_dir}: its head is {heads[0]}, which jaxattr does not run (it runs "
                              "...ForSequenceClassification and ...ForTokenClassification checkpoints and bare "
                              "encoders); fine-tune a sequence classifier from it with `jaxattr train` instead of "
                              "loading it as one")
    if num_labels is not None or problem_type is not None:
        pt = problem_type or ("regression" if num_labels == 1 and cfg.task == "sequence" else "classification")
        if pt == "regression" and cfg.task == "token":
            raise CheckpointError(f"{hf_dir}: a token-classification head cannot be a regression head")
        n = 1 if pt == "regression" else (num_labels or cfg.num_labels)
        labels = cfg.label_names if cfg.label_names and len(cfg.label_names) == n else None
        cfg = cfg.replace(num_labels=n, problem_type=pt, label_names=labels)
    sd = _read_state_dict(hf_dir)
    if cfg.task != task_of(hf_cfg):  # the other kind of head: none of the stored head's tensors is read
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "pre_classifier.", "pooler.", "head."))
              and ".pooler." not in k}
    head_keys = [k for k in sd if k.startswith(("classifier.", "pre_classifier."))]
    if num_labels is not None and head_keys:
        # A new head size: drop the old output layer so it is initialised fresh.
        seq_proj = cfg.family in ("roberta", "electra") and cfg.task == "sequence"
        out = "classifier.out_proj." if seq_proj else "classifier."
        sd = {k: v for k, v in sd.items() if not k.startswith(out) or v.shape[0] == cfg.num_labels}
    return cfg, params_from_state_dict(cfg, sd, seed=seed, source=str(hf_dir))


def save_hf_dir(cfg: EncoderConfig, params: Params, out_dir: str | Path,
                tokenizer_dir: str | Path | None = None) -> Path:
    """Write `config.json` + `model.safetensors` (+ tokenizer files) loadable by transformers."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2))
    save_file(params_to_state_dict(cfg, params), str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)  # safetensors writes 0600; the other files are 0644
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.exists() and src.resolve() != (out / name).resolve():
                shutil.copy(src, out / name)
    return out
