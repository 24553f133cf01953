"""Plausibility metrics on hand-made rationales (values worked out by hand), and rationales read from data."""

import json

import numpy as np
import pytest

from jaxattr.evaluation.plausibility import plausibility


def test_a_map_that_ranks_the_rationale_first_scores_one():
    r = np.array([0, 1, 1, 0, 0], bool)
    p = plausibility(np.array([0.1, 0.9, 0.8, 0.2, 0.0]), r)
    assert p == (1.0, 1.0, 1.0)


def test_hand_computed_partial_overlap():
    # rationale {1, 2}; top-2 of the scores {1, 3}: intersection 1, union 3
    r = np.array([0, 1, 1, 0, 0], bool)
    s = np.array([0.0, 0.9, 0.1, 0.8, 0.2])
    p = plausibility(s, r)
    assert p.token_f1 == pytest.approx(0.5) and p.iou == pytest.approx(1 / 3)
    # ranking 1, 3, 4, 2, 0: precision at the relevant hits 1/1 and 2/4 -> AP = (1 + 0.5) / 2
    assert p.auprc == pytest.approx(0.75)
    # k = 3 takes {1, 3, 4}: F1 = 2·1/(3+2), IOU = 1/4
    p3 = plausibility(s, r, k=3)
    assert p3.token_f1 == pytest.approx(0.4) and p3.iou == pytest.approx(0.25)


def test_special_and_padding_positions_do_not_count():
    # position 0 ([CLS]) has the highest score but is not valid: the rationale is still ranked first
    s = np.array([5.0, 0.9, 0.1, 0.0])
    r = np.array([0, 1, 0, 0], bool)
    valid = np.array([0, 1, 1, 0], bool)
    assert plausibility(s, r, valid) == (1.0, 1.0, 1.0)
    assert plausibility(s, r).token_f1 == 0.0  # counting [CLS] the top-1 misses


def test_empty_rationale_is_nan_and_shapes_must_match():
    assert all(np.isnan(plausibility(np.ones(3), np.zeros(3, bool))))
    with pytest.raises(ValueError, match="one shape"):
        plausibility(np.ones(3), np.ones(4, bool))


# ----------------------------------------------------------------------------------------------
# Rationales from data: token_rationale, evaluate(..., rationale_column=) and `jaxattr evaluate`

# every whitespace word is one token of helpers.tiny_model's vocabulary: token j + 1 is word j
ONE_PIECE = ["i love self driving cars !", "good news , a car", "not very good driving", "you hate it"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from helpers import save_tiny_tokenizer
    from transformers import BertTokenizerFast

    path = tmp_path_factory.mktemp("tok")
    save_tiny_tokenizer(path)
    return BertTokenizerFast.from_pretrained(str(path))


def test_token_rationale_maps_words_and_spans_to_tokens(tokenizer):
    from jaxattr.data import encode_texts
    from jaxattr.errors import UserError
    from jaxattr.evaluation.plausibility import token_rationale

    (ex, split) = encode_texts(tokenizer, ["i love self driving cars !", "the zebra news"])
    marked = lambda m: [t for t, x in zip(ex["tokens"], m) if x]
    assert marked(token_rationale(ex, [0, 1, 0, 0, 1, 0])) == ["love", "cars"]
    assert marked(token_rationale(ex, "[0, 1, 0, 0, 1, 0]")) == ["love", "cars"]  # a CSV cell's JSON text
    assert marked(token_rationale(ex, [[2, 6], [13, 15]])) == ["love", "driving"]  # a span inside a word marks it
    assert not token_rationale(ex, []).any()
    assert split["tokens"][2:7] == ["z", "##e", "##b", "##r", "##a"]
    assert token_rationale(split, [0, 1, 0]).tolist() == [False, False] + [True] * 5 + [False, False]
    for bad, needle in (([0, 1], "2 marks but the text has 6 whitespace words"), ([[0, 99]], "0 <= start < end <= 26"),
                        ([[4, 4]], "start < end"), ([0, 2, 0, 0, 0, 0], "not a list of 0/1"), ("oops", "not a list")):
        with pytest.raises(UserError, match=needle):
            token_rationale(ex, bad)


def test_evaluate_a_rationale_of_the_top_tokens_scores_one(model_dir, tmp_path):
    """Rationales made from gradxinput's own top-2 tokens (as words, as character spans): F1 = IOU = AUPRC = 1
    for gradxinput, read back from the stored records of a first run without rationales."""
    import datasets

    from jaxattr.evaluation import evaluate, summarise

    kw = dict(methods=["gradxinput", "random"], metrics=["log_odds"], out=tmp_path / "out", progress=False)
    first = evaluate(str(model_dir), ONE_PIECE, **kw)
    assert "token_f1" not in first.columns
    rationales = []
    for i, text in enumerate(ONE_PIECE):
        scores = np.asarray(first[(first["id"] == i) & (first["method"] == "gradxinput")]["scores"].iloc[0])
        words = text.split()
        assert len(scores) == len(words) + 2
        top = set(np.argsort(-scores[1:-1])[:2].tolist())  # word indices ([CLS] is token 0)
        if i % 2:
            starts = [sum(len(w) + 1 for w in words[:j]) for j in range(len(words))]
            rationales.append(json.dumps([[starts[j], starts[j] + len(words[j])] for j in sorted(top)]))
        else:
            rationales.append(json.dumps([int(j in top) for j in range(len(words))]))
    ds = datasets.Dataset.from_dict({"text": ONE_PIECE, "gold_words": rationales})
    df = evaluate(str(model_dir), ds, rationale_column="gold_words", **kw)
    mine = df[df["method"] == "gradxinput"]
    assert len(mine) == len(ONE_PIECE)
    assert (mine["token_f1"] == 1).all() and (mine["iou"] == 1).all() and (mine["auprc"] == 1).all()
    other = df[df["method"] == "random"]
    assert ((other["token_f1"] >= 0) & (other["token_f1"] <= 1)).all()
    table = summarise(df).set_index("method")
    assert table.loc["gradxinput", "token_f1"] == 1 and table.loc["gradxinput", "iou"] == 1
    assert table.loc["random", "iou"] == pytest.approx(other["iou"].mean())
    assert {"token_f1_se", "iou_se", "auprc_se"} <= set(table.columns)


def test_cli_rationale_column_and_one_line_errors(model_dir, tmp_path, capsys):
    from jaxattr import cli

    def run(rows, column="rationale"):
        data = tmp_path / "data.jsonl"
        data.write_text("".join(json.dumps({"text": t, "rationale": r}) + "\n" for t, r in zip(ONE_PIECE, rows)))
        return cli.main(["evaluate", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o"),
                         "--methods", "random", "--metrics", "log_odds", "--examples", "0", "--label-column", "",
                         "--rationale-column", column])

    assert run([[int(i == 0) for i, _ in enumerate(t.split())] for t in ONE_PIECE]) == 0
    header = (tmp_path / "o" / "attribution_table.csv").read_text().splitlines()[0].split(",")
    assert {"token_f1", "iou", "auprc"} <= set(header)
    assert "Token F1" in (tmp_path / "o" / "attribution_table.md").read_text()
    capsys.readouterr()
    for rows, column, needle in ((None, "gold", "no rationale column 'gold'"),
                                 ([[1, 0]] * 4, "rationale", "2 marks but the text has"),
                                 ([[[0, 99]]] * 4, "rationale", "0 <= start < end <=")):
        rows = rows or [[0] * len(t.split()) for t in ONE_PIECE]
        assert run(rows, column) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "error:" in err and needle in err, err
