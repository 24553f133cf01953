"""Plain helpers and constants shared by the test modules; shared pytest fixtures live in conftest.py and the
tiny HF (PyTorch) model builders in hf_tiny.py. A test module never imports another test module
(tests/test_layers.py checks it): what two of them share belongs here."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import transformers
from hf_tiny import VOCAB, WORDS, save_tiny
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from jaxattr.attribution import integrated_gradients
from jaxattr.data import encode_texts, pad_batch
from jaxattr.models import Model, load_model

# the tiny models (tests/hf_tiny.py WORDS vocabulary) ------------------------------------------------------
TEXTS = ["i love self driving cars !", "the zebra news is very bad", "you hate it"]


def save_tiny_tokenizer(path: Path) -> None:
    """A fast WordPiece tokenizer whose ids fit the tiny models' 100-word vocabulary."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = list(dict.fromkeys(specials + WORDS + letters + [f"##{c}" for c in letters]))[:VOCAB]
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(path))


def tiny_model(path: Path, num_labels: int = 3, seed: int = 0) -> tuple[Model, object]:
    """(jaxattr Model, HF torch model) for a tiny random BERT with O(1) logits and a tokenizer."""
    torch_model = save_tiny("bert", path, num_labels=num_labels, seed=seed)
    save_tiny_tokenizer(path)
    return load_model(str(path)), torch_model


def encoded(model: Model, texts=TEXTS, length: int = 16):
    exs = encode_texts(model.tokenizer, texts)
    for i, ex in enumerate(exs):
        ex["id"] = i
    return exs, pad_batch(exs, length, model.pad_id)


# six short rows (the first three are TEXTS) for the CLI commands' input tables
TABLE_TEXTS = TEXTS + ["good news , a car", "not very good driving", "cars , cars , cars"]


def attribute(model_dir, *extra) -> int:
    """`jaxattr attribute --model model_dir ...`; the exit code."""
    from jaxattr.cli import main

    return main(["attribute", "--model", str(model_dir), *map(str, extra)])


@functools.cache
def ig_fn(cfg, baseline: str = "mask", output: str = "logit", mask_id: int = 4, pad_id: int = 0):
    """One compiled 50-step IG per (config, baseline, output), shared by the tests."""
    return jax.jit(lambda p, b, t=None: integrated_gradients(p, cfg, b, steps=50, baseline=baseline, output=output,
                                                             target=t, mask_id=mask_id, pad_id=pad_id))


# training data -------------------------------------------------------------------------------------------

def synthetic_batch(b: int, t: int, seed: int, vocab: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    am = (np.arange(t)[None] < rng.integers(3, t + 1, b)[:, None]).astype(np.int32)
    return {"input_ids": (rng.integers(5, vocab, (b, t)) * am).astype(np.int32), "attention_mask": am,
            "token_type_ids": np.zeros((b, t), np.int32), "labels": rng.integers(0, 2, b).astype(np.int32),
            "weight": np.ones(b, np.float32)}


def write_csv(path: Path, n: int, seed: int, pair: bool = False, regression: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    good, bad = ["great", "lovely", "fine", "superb"], ["awful", "bad", "poor", "terrible"]
    rows = ["text,text_pair,label" if pair else "text,label"]
    for _ in range(n):
        y = int(rng.integers(2))
        w = rng.choice(good if y else bad)
        text = f"the film was {w} and {rng.choice(good + bad)}"
        label = f"{y + rng.normal(0, 0.1):.3f}" if regression else ("pos" if y else "neg")
        rows.append(f"{text},it was {w},{label}" if pair else f"{text},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


# the fast-tokenizer kinds (trained here, no download) -----------------------------------------------------

CORPUS = ["I love my new self-driving car!", "Driverless cars are not worth the risk.",
          "Would you trust a computer to drive your kids to school?", "The news about sport, honestly, is good."] * 20
TOKENIZER_TEXT = "Driverless cars, honestly? I trust them!"


def wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def byte_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")), trim_offsets=True)
    return tok


def sentencepiece() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def spm_model_dir(path: Path) -> Path:
    """A tokenizer directory as DeBERTa-v3 ships on the Hub: a SentencePiece `spm.model` (trained here with
    the `sentencepiece` package) and `tokenizer_config.json`, no `tokenizer.json`."""
    import sentencepiece as spm

    path.mkdir(parents=True, exist_ok=True)
    corpus = path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(path / "spm"), vocab_size=59, model_type="unigram",
        character_coverage=1.0, pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]",
        eos_piece="[SEP]", unk_piece="[UNK]", user_defined_symbols=["[MASK]"], minloglevel=2)
    corpus.unlink()
    (path / "spm.vocab").unlink()
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer",
                                                            "do_lower_case": False}))
    return path


KINDS = {
    # kind: (builder, special tokens, word-start marker, words of TOKENIZER_TEXT)
    "wordpiece": (wordpiece, dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                                   mask_token="[MASK]"), None,
                  ["Driverless", "cars", ",", "honestly", "?", "I", "trust", "them", "!"]),
    "byte_bpe": (byte_bpe, dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
                                 pad_token="<pad>", unk_token="<unk>", mask_token="<mask>"), "Ġ",
                 ["Driverless", "cars", ",", "honestly", "?", "I", "trust", "them", "!"]),
    "sentencepiece": (sentencepiece, dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="<pad>",
                                           unk_token="<unk>", mask_token="[MASK]"), "▁",
                      ["Driverless", "cars,", "honestly?", "I", "trust", "them!"]),
}


# ---- multi-process jobs on loopback (tests of jaxattr.attribution.multihost)
ROOT = Path(__file__).resolve().parents[1]
JOB_TEXTS = ["i love self driving cars", "the zebra news is very bad", "you hate it", "good news a car",
             "not very good driving", "cars cars cars", "it is not bad", "a very very good car"]

# one process runs the commands one after another (one interpreter start, one jax.distributed init)
WORKER = "import sys; from jaxattr.cli import main; [main(a) for a in eval(sys.argv[1])]"


# the same, but every ResultWriter.write is followed by a pause: a job a test can kill between two records
# however fast it runs (with the run's compilation cache a tiny job ends within one polling interval)
SLOW_WRITER = ("import sys, time\nfrom jaxattr.attribution.results import ResultWriter\nwrite = ResultWriter.write\n"
               "def slow(self, records):\n    n = write(self, records)\n    time.sleep(0.5)\n    return n\n"
               "ResultWriter.write = slow\n" + WORKER)


def device_flags(n: int) -> str:
    """XLA_FLAGS for a launched process with `n` CPU devices, keeping the test run's own flags (-O0, conftest)."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()


def launch_processes(commands: list[list[str]], worker: str = WORKER) -> list[subprocess.Popen]:
    """2 processes x 2 CPU devices on loopback, each running `jaxattr` `commands` one after another (`worker`:
    WORKER, or SLOW_WRITER for a job to be killed midway)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=device_flags(2),
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    return [subprocess.Popen([sys.executable, "-c", worker, repr(commands)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(env, JAX_PROCESS_ID=str(i)))
            for i in range(2)]


def wait_processes(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
