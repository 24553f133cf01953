"""jaxattr checkpoints: `jaxattr.json` (format, version, model config) + Orbax params + tokenizer files.

Layout of a checkpoint directory:
  jaxattr.json   {"format": "jaxattr-checkpoint", "version": 1, "config": EncoderConfig.to_dict()}
  params/        Orbax StandardCheckpointer tree (the parameter pytree, float32)
  tokenizer.json, vocab.txt, ...   tokenizer files (`tokenizer.save_pretrained(dir)`)

Restoring builds the expected abstract tree from the config (`jax.eval_shape(init_params, ...)`) and
checks the stored shapes first, so a checkpoint of another architecture is a one-line error naming
the differing tensors instead of an Orbax traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax

from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, init_params

FORMAT = "jaxattr-checkpoint"
VERSION = 1
MARKER = "jaxattr.json"
PARAMS_DIR = "params"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "vocab.json", "merges.txt", "spm.model")


class CheckpointMismatch(UserError):
    """A checkpoint that exists but does not hold the expected model."""


def abstract_params(cfg: EncoderConfig) -> Params:
    """ShapeDtypeStructs of the params for `cfg` (no memory allocated)."""
    return jax.eval_shape(lambda key: init_params(cfg, key), jax.random.key(0))


def _checkpointer() -> Any:
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def save_checkpoint(ckpt_dir: str | Path, cfg: EncoderConfig, params: Params, tokenizer: Any = None) -> Path:
    """Write a checkpoint (synchronously: complete when this returns); an existing one is replaced.

    `tokenizer` is a HF tokenizer (saved with `save_pretrained`) or a directory to copy tokenizer files from.
    """
    out = Path(ckpt_dir).absolute()
    expected = abstract_params(cfg)
    _check_shapes(expected, params, f"params for {out}")
    out.mkdir(parents=True, exist_ok=True)
    params_dir = out / PARAMS_DIR
    if params_dir.exists():
        shutil.rmtree(params_dir)
    params = jax.tree.map(lambda x: jax.numpy.asarray(x, jax.numpy.float32), params)
    with _checkpointer() as ckptr:
        ckptr.save(params_dir, params)
        ckptr.wait_until_finished()
    if tokenizer is not None:
        if isinstance(tokenizer, (str, Path)):
            for name in _TOKENIZER_FILES:
                src = Path(tokenizer) / name
                if src.exists() and src.resolve() != (out / name).resolve():
                    shutil.copy(src, out / name)
        else:
            tokenizer.save_pretrained(str(out))
    # The marker is written last: a directory with jaxattr.json is a complete checkpoint.
    meta = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict()}
    (out / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def read_checkpoint_config(ckpt_dir: str | Path) -> EncoderConfig:
    """The model config stored in `ckpt_dir/jaxattr.json` (UserError if missing or malformed)."""
    path = Path(ckpt_dir) / MARKER
    if not path.exists():
        raise CheckpointMismatch(f"{path}: file not found; {ckpt_dir} is not a jaxattr checkpoint")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointMismatch(f"{path}: malformed JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointMismatch(f"{path}: not a jaxattr checkpoint (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointMismatch(f"{path}: checkpoint version {meta.get('version')!r}; this jaxattr reads {VERSION}")
    try:
        return EncoderConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointMismatch(f"{path}: bad model config ({e})") from None


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def _check_shapes(expected: Any, stored: Any, where: str) -> None:
    """UserError naming the tensors that are missing, extra or of another shape."""
    want, have = _flat_shapes(expected), _flat_shapes(stored)
    problems = [f"{k} missing" for k in want if k not in have]
    problems += [f"{k} unexpected" for k in have if k not in want]
    problems += [f"{k} has shape {have[k]}, expected {want[k]}" for k in want if k in have and have[k] != want[k]]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointMismatch(f"{where}: parameters do not match the model config: {'; '.join(problems[:3])}{more}")


def config_diff(a: EncoderConfig, b: EncoderConfig, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """`field: checkpoint A, expected B` for every config field where `a` (stored) and `b` (expected) differ."""
    da, db = (c.to_dict() | {"task": c.task} for c in (a, b))  # to_dict leaves out the default task
    return [f"{k}: checkpoint {da[k]!r}, expected {db[k]!r}" for k in da if k not in ignore and da[k] != db[k]]


def load_checkpoint(ckpt_dir: str | Path, expect: EncoderConfig | None = None) -> tuple[EncoderConfig, Params]:
    """(config, params) of a checkpoint; `expect` (if given) must equal the stored config.

    Fields that do not change the parameters (dtype, dropout rates) are not compared with `expect`;
    when given, `expect` is the config returned (so a bf16 `expect` restores for bf16 compute).
    """
    ckpt_dir = Path(ckpt_dir).absolute()
    cfg = read_checkpoint_config(ckpt_dir)
    if expect is not None:
        diff = config_diff(cfg, expect, ignore=("dtype", "dropout_rate", "attention_dropout_rate",
                                                "classifier_dropout_rate", "embedding_dropout_rate"))
        if diff:
            raise CheckpointMismatch(f"{ckpt_dir}: checkpoint config differs from the expected one: {'; '.join(diff)}")
    params_dir = ckpt_dir / PARAMS_DIR
    if not params_dir.is_dir():
        raise CheckpointMismatch(f"{params_dir}: directory not found; the checkpoint is incomplete")
    abstract = abstract_params(cfg)
    with _checkpointer() as ckptr:
        try:
            meta = ckptr.metadata(params_dir)
        except Exception as e:  # noqa: BLE001 - unreadable Orbax metadata
            raise CheckpointMismatch(f"{params_dir}: cannot read Orbax metadata ({type(e).__name__})") from None
        _check_shapes(abstract, getattr(meta, "item_metadata", meta), str(params_dir))
        try:
            params = ckptr.restore(params_dir, abstract)
        except Exception as e:  # noqa: BLE001 - corrupt files
            msg = " ".join(str(e).split())[:200]
            raise CheckpointMismatch(f"{params_dir}: cannot restore params ({type(e).__name__}: {msg})") from None
    return (cfg if expect is None else expect), params
