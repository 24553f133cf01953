"""Encoder config, pure-functional Flax encoder, HF import/export and the embedded MiniLM."""

from jaxattr.models.config import EncoderConfig, tiny_config
from jaxattr.models.encoder import (
    EncoderOutput,
    classify,
    embed,
    forward,
    forward_batch,
    init_params,
    predict_probs,
    probe_logits,
    run_layers,
    token_logits,
    word_embeddings,
)
from jaxattr.models.hf import load_hf_dir, save_hf_dir

__all__ = [
    "EncoderConfig", "EncoderOutput", "classify", "embed", "forward", "forward_batch", "init_params",
    "load_hf_dir", "predict_probs", "probe_logits", "run_layers", "save_hf_dir", "tiny_config", "token_logits",
    "word_embeddings",
]

from jaxattr.models.loading import Model, load_minilm, load_model, load_tokenizer, minilm_dir  # noqa: E402

__all__ += ["Model", "load_minilm", "load_model", "load_tokenizer", "minilm_dir"]

from jaxattr.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402  (orbax is imported lazily)

__all__ += ["load_checkpoint", "save_checkpoint"]
