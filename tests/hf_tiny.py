"""Tiny random HF PyTorch models of each family, built by the tests with transformers (the oracle).

Weights are re-drawn with a larger scale than HF's N(0, 0.02) init so that logits differ clearly
between inputs and a wrong wiring cannot hide behind near-constant outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = 100
FAMILIES = ("bert", "roberta", "distilbert", "electra", "albert", "xlm-roberta", "camembert", "modernbert",
            "deberta-v2")
TOKEN_TYPES = ("bert", "electra", "albert", "deberta-v2")  # tiny configs with two token types (DeBERTa v3: none)
ROBERTA_LAYOUT = ("roberta", "xlm-roberta", "camembert")  # positions from pad_token_id + 1, no token types
WORDS = ["the", "a", "car", "cars", "good", "bad", "love", "hate", "drive", "self", "driving", "i", "you",
         "it", "is", "not", "very", "news", "sport", "##s", "##ing", "##ed", "!", ".", ",", "?"]


def hf_config(family: str, num_labels: int = 3, label_names: list[str] | None = None,
              **extra) -> transformers.PretrainedConfig:
    names = label_names or [f"class{i}" for i in range(num_labels)]
    labels = {} if num_labels == 1 else {"id2label": dict(enumerate(names)),
                                         "label2id": {n: i for i, n in enumerate(names)}}
    if num_labels == 1:
        extra.setdefault("problem_type", "regression")
    common = dict(vocab_size=VOCAB, max_position_embeddings=64, num_labels=num_labels, **labels, **extra)
    if family == "bert":
        return transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=37, type_vocab_size=2, **common)
    if family in ROBERTA_LAYOUT:
        common["max_position_embeddings"] = 66  # RoBERTa positions start at pad_token_id + 1
        cls = {"roberta": transformers.RobertaConfig, "xlm-roberta": transformers.XLMRobertaConfig,
               "camembert": transformers.CamembertConfig}[family]
        return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                   type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
    if family == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **common)
    if family == "electra":  # embedding_size != hidden_size exercises the projection
        return transformers.ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=37, type_vocab_size=2,
                                          **common)
    if family == "albert":  # factorised embeddings; 3 blocks sharing 2 parameter groups (0, 0, 1)
        return transformers.AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=3,
                                         num_hidden_groups=2, num_attention_heads=4, intermediate_size=37,
                                         type_vocab_size=2, hidden_act="gelu_new", **common)
    if family == "modernbert":  # 3 layers: global, local, global; the 8-token window binds on 16 tokens
        extra.setdefault("classifier_pooling", "cls")
        return transformers.ModernBertConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            global_attn_every_n_layers=2, local_attention=8, pad_token_id=0, bos_token_id=2, cls_token_id=2,
            eos_token_id=3, sep_token_id=3, **common)
    if family == "deberta-v2":  # v3 layout; 8 buckets < 16 tokens, so the log buckets are exercised
        deberta = dict(relative_attention=True, position_buckets=8, max_relative_positions=16,
                       pos_att_type=["p2c", "c2p"], share_att_key=True, position_biased_input=False,
                       type_vocab_size=0, norm_rel_ebd="layer_norm", pooler_hidden_act="gelu")
        return transformers.DebertaV2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=37, **(deberta | common))
    raise ValueError(family)


def hf_model(family: str, num_labels: int = 3, seed: int = 0, task: str = "sequence", **extra) -> torch.nn.Module:
    """A random `...ForSequenceClassification` (task "token": `...ForTokenClassification`) in eval mode with
    O(1) logits."""
    torch.manual_seed(seed)
    auto = {"sequence": transformers.AutoModelForSequenceClassification,
            "token": transformers.AutoModelForTokenClassification}[task]
    model = auto.from_config(hf_config(family, num_labels, **extra))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def save_tiny(family: str, path: Path, num_labels: int = 3, seed: int = 0, tokenizer: bool = False,
              task: str = "sequence", **extra) -> torch.nn.Module:
    """Save a tiny model (and optionally a matching 100-word WordPiece tokenizer) to `path`; task "token":
    a `...ForTokenClassification`."""
    model = hf_model(family, num_labels, seed, task=task, **extra)
    model.save_pretrained(path)
    if tokenizer:
        save_tokenizer(path)
    return model


def save_tokenizer(path: Path) -> None:
    """A BERT WordPiece tokenizer whose vocabulary fits VOCAB (ids < 100)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = specials + WORDS + letters + [f"##{c}" for c in letters]
    vocab = list(dict.fromkeys(vocab))[:VOCAB]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    assert tok.vocab_size == len(vocab)
    tok.save_pretrained(str(path))


def random_batch(family: str, lengths=(16, 9, 5, 12), length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A padded batch of mixed lengths with valid ids (never the pad id) and random token types."""
    rng = np.random.default_rng(seed)
    pad = 1 if family in ROBERTA_LAYOUT else 0
    b = len(lengths)
    ids = np.full((b, length), pad, np.int32)
    mask = np.zeros((b, length), np.int32)
    types = np.zeros((b, length), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(3, VOCAB, n)
        mask[i, :n] = 1
        if family in TOKEN_TYPES:  # a DeBERTa without token types ignores them
            types[i, n // 2:n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def hf_logits(model: torch.nn.Module, batch: dict[str, np.ndarray], family: str) -> np.ndarray:
    kwargs = {"input_ids": torch.tensor(batch["input_ids"], dtype=torch.long),
              "attention_mask": torch.tensor(batch["attention_mask"], dtype=torch.long)}
    if family in TOKEN_TYPES and (family != "deberta-v2" or model.config.type_vocab_size > 0):
        kwargs["token_type_ids"] = torch.tensor(batch["token_type_ids"], dtype=torch.long)
    with torch.no_grad():
        return model(**kwargs).logits.numpy()
