"""`faithfulness(..., protocol="tint")` (issue 32) against the SIG paper's own metric code: tint's
`experiments/nlp/metrics.py` (kept verbatim in tests/tint_nlp_metrics.py: the experiments are not in the package),
run per unpadded example on the same tiny HF BERT, and the packaged `tint.metrics` where it computes the same
quantity. LO is checked with both baseline tokens a SIG run uses ([MASK], [PAD])."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model
from tint_nlp_metrics import eval_comprehensiveness, eval_log_odds, eval_sufficiency

from jaxattr.errors import UserError
from jaxattr.evaluation.faithfulness import comprehensiveness, faithfulness, log_odds, sufficiency

T = 16
LENGTHS = [3, 5, 7, 10, 12, 15, 16]  # valid tokens per example, [CLS] and [SEP] included
PROTOCOL_METRICS = ("log_odds", "comprehensiveness", "sufficiency")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, torch_model = tiny_model(tmp_path_factory.mktemp("tiny_bert_tint"))
    rng = np.random.default_rng(2)
    b = len(LENGTHS)
    batch = {k: np.zeros((b, T), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch["word_ids"] = np.full((b, T), -1, np.int32)
    scores = np.zeros((b, T), np.float32)
    for i, n in enumerate(LENGTHS):
        batch["input_ids"][i, :n] = rng.integers(5, 100, n)
        batch["input_ids"][i, 0], batch["input_ids"][i, n - 1] = 2, 3  # [CLS], [SEP]
        batch["attention_mask"][i, :n] = 1
        batch["word_ids"][i, 1:n - 1] = np.arange(n - 2)
        scores[i, 1:n - 1] = rng.normal(size=n - 2)  # special tokens score 0, as our methods give them
    scores[4, 1:11] = -np.abs(scores[4, 1:11])  # n = 12, k = 2: all negative, tint picks [CLS] and [SEP]
    scores[6, 1:15] = -np.abs(scores[6, 1:15])  # n = 16, k = 3: one positive, then [CLS] and [SEP]
    scores[6, 7] = 1.0
    for i, n in enumerate(LENGTHS):  # no tie at the top-k boundary (torch.topk's order among ties is unspecified)
        k, positive = (n * 20) // 100, int((scores[i, :n] > 0).sum())
        assert positive >= k or positive <= k - 2, i
    return model, torch_model.double().eval(), batch, scores


def _forward(torch_model):
    """tint's `forward_fn` signature over the HF model. tint's own `ForwardModel` feeds `inputs_embeds` that
    already hold positions, types and the LayerNorm, which HF adds again; here HF adds them once, so the
    positions and types tint passes must be HF's own (checked)."""
    emb = torch_model.bert.embeddings

    def f(input_embed, attention_mask=None, position_embed=None, type_embed=None, return_all_logits=False):
        m = input_embed.shape[1]
        assert torch.equal(position_embed[0], emb.position_embeddings.weight[:m])
        assert torch.equal(type_embed[0], emb.token_type_embeddings.weight[0].expand(m, -1))
        logits = torch_model(inputs_embeds=input_embed, attention_mask=attention_mask).logits
        return logits if return_all_logits else logits.max(1).values

    return f


def _paper(torch_model, batch, scores, ref_id):
    """The paper's three metrics per example, as its `main.py` calls them (topk=int(0.2 * 100))."""
    emb = torch_model.bert.embeddings
    f = _forward(torch_model)
    out = {m: [] for m in PROTOCOL_METRICS}
    with torch.no_grad():
        for i, n in enumerate(batch["attention_mask"].sum(1)):
            ids = torch.tensor(batch["input_ids"][i, :n], dtype=torch.long)[None]
            args = dict(forward_fn=f, input_embed=emb.word_embeddings(ids),
                        position_embed=emb.position_embeddings(torch.arange(n)[None]),
                        type_embed=emb.token_type_embeddings(torch.zeros_like(ids)),
                        attention_mask=torch.ones_like(ids),
                        attr=torch.tensor(scores[i, :n], dtype=torch.float64), topk=20)
            out["log_odds"].append(eval_log_odds(base_token_emb=emb.word_embeddings(torch.tensor([ref_id])),
                                                 **args)[0])
            out["comprehensiveness"].append(eval_comprehensiveness(**args))
            out["sufficiency"].append(float(eval_sufficiency(**args)))
    return {m: np.asarray(v) for m, v in out.items()}


def test_tint_protocol_matches_the_papers_code(setup):
    model, torch_model, batch, scores = setup
    params, cfg = model.params, model.cfg
    for ref_id in (model.mask_id, model.pad_id):  # LO writes the run's baseline token over the top-k
        got = faithfulness(params, cfg, batch, scores, mask_id=ref_id, metrics=PROTOCOL_METRICS, protocol="tint",
                           chunk_size=8)
        want = _paper(torch_model, batch, scores, ref_id)
        for m in PROTOCOL_METRICS:
            np.testing.assert_allclose(got[m], want[m], atol=1e-5, err_msg=f"{m}, baseline token {ref_id}")
    assert want["sufficiency"][0] == 0.0 and np.abs(want["comprehensiveness"]).max() > 1e-2
    # Our default protocol: LO and Comp differ where tint's top-k takes [CLS]/[SEP] (examples 4 and 6) and only
    # there; Suff wherever there is a rationale (tint deletes the special tokens outside it, we keep them).
    ours = faithfulness(params, cfg, batch, scores, mask_id=model.pad_id, metrics=PROTOCOL_METRICS)
    expected = {"log_odds": [4, 6], "comprehensiveness": [4, 6], "sufficiency": [1, 2, 3, 4, 5, 6]}
    for m, where in expected.items():
        assert np.flatnonzero(np.abs(ours[m] - got[m]) > 1e-4).tolist() == where, (m, ours[m], got[m])
    np.testing.assert_allclose(log_odds(params, cfg, batch, scores, mask_id=model.pad_id, protocol="tint"),
                               got["log_odds"], atol=1e-6)
    np.testing.assert_allclose(comprehensiveness(params, cfg, batch, scores, protocol="tint"),
                               got["comprehensiveness"], atol=1e-6)
    np.testing.assert_allclose(sufficiency(params, cfg, batch, scores, protocol="tint"), got["sufficiency"],
                               atol=1e-6)


def test_packaged_tint_metrics_agree(setup):
    """`tint.metrics` replaces the top-k features by a baseline value: with token ids as inputs and the baseline
    token it is the paper's LO; with a marker deleted by the forward it is the paper's Comp, and its Suff (which
    replaces the int(0.8 n) lowest) keeps the paper's int(0.2 n) tokens when 0.2 n is whole."""
    metrics = pytest.importorskip("tint.metrics")
    model, torch_model, batch, scores = setup
    gone = -1.0

    def by_ids(x):  # ids as float (tint adds zero noise to its inputs); `gone` positions deleted
        with torch.no_grad():
            return torch.cat([torch_model(input_ids=r[r != gone].long()[None]).logits for r in x])

    got = faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id, metrics=PROTOCOL_METRICS,
                       protocol="tint")
    for i, n in enumerate(LENGTHS):
        ids = torch.tensor(batch["input_ids"][i:i + 1, :n], dtype=torch.float64)
        attr = torch.tensor(scores[i:i + 1, :n], dtype=torch.float64)
        lo = metrics.log_odds(by_ids, ids, attr, baselines=model.mask_id, topk=0.2)
        comp = metrics.comprehensiveness(by_ids, ids, attr, baselines=gone, topk=0.2)
        assert got["log_odds"][i] == pytest.approx(lo, abs=1e-5), i
        assert got["comprehensiveness"][i] == pytest.approx(comp, abs=1e-5), i
        if n % 5 == 0:
            suff = metrics.sufficiency(by_ids, ids, attr, baselines=gone, topk=0.2)
            assert got["sufficiency"][i] == pytest.approx(suff, abs=1e-5), i


def test_protocol_options_are_checked(setup):
    model, _, batch, scores = setup
    with pytest.raises(UserError, match="protocol 'dig'"):
        faithfulness(model.params, model.cfg, batch, scores, mask_id=4, protocol="dig")
    with pytest.raises(UserError, match="AOPC is ferret's metric"):
        faithfulness(model.params, model.cfg, batch, scores, mask_id=4, protocol="tint")
    with pytest.raises(UserError, match="give mask_id"):
        faithfulness(model.params, model.cfg, batch, scores, mask_id=None, metrics=("log_odds",))
    with pytest.raises(UserError, match="target is for token-classification models"):
        faithfulness(model.params, model.cfg, batch, scores, mask_id=4, target=np.zeros(len(LENGTHS), np.int32))
