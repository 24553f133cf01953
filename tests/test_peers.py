"""Parity with the PyTorch peers on the same converted model and inputs: Captum (IG, Saliency,
InputXGradient on input word embeddings) and tint's SequentialIntegratedGradients, <= 1e-4 relative.

The HF model takes `inputs_embeds` (word embeddings) and adds position and token-type embeddings
itself, exactly our convention. A peer that cannot be imported skips its test with the reason.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from helpers import encoded, tiny_model

from jaxattr.attribution import grad_x_input, integrated_gradients, saliency, sequential_integrated_gradients

REL = 1e-4


def _import(module: str, what: str):
    try:
        mod = __import__(module, fromlist=[what])
        return getattr(mod, what)
    except Exception as e:  # noqa: BLE001 - report any import failure as the skip reason
        pytest.skip(f"cannot import {what} from {module}: {type(e).__name__}: {e}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, torch_model = tiny_model(tmp_path_factory.mktemp("tiny_bert_peers"))
    torch_model = torch_model.double().eval()  # fp64 oracle: differences are ours, not the peer's rounding
    exs, batch = encoded(model)
    return model, torch_model, exs, batch


def _torch_inputs(torch_model, ex, mask_id):
    ids = torch.tensor(ex["input_ids"], dtype=torch.long)[None]
    emb = torch_model.bert.embeddings.word_embeddings(ids).detach()
    words = torch.tensor(np.asarray(ex["word_ids"]) >= 0)[None]
    base_ids = torch.where(words, torch.tensor(mask_id), ids)
    base = torch_model.bert.embeddings.word_embeddings(base_ids).detach()
    tt = torch.tensor(ex["token_type_ids"], dtype=torch.long)[None]
    return emb, base, tt


def _forward(torch_model):
    def f(inputs_embeds, token_type_ids):
        return torch_model(inputs_embeds=inputs_embeds, token_type_ids=token_type_ids).logits
    return f


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    scale = np.abs(theirs).max()
    assert scale > 0
    err = np.abs(ours - theirs).max() / scale
    assert err <= REL, f"max relative difference {err:.2e}"


def test_ig_matches_captum(setup):
    IntegratedGradients = _import("captum.attr", "IntegratedGradients")
    model, torch_model, exs, batch = setup
    ours = jax.jit(lambda p, b: integrated_gradients(p, model.cfg, b, steps=50, mask_id=model.mask_id,
                                                     pad_id=model.pad_id))(model.params, batch)
    ig = IntegratedGradients(_forward(torch_model))
    for i, ex in enumerate(exs):
        emb, base, tt = _torch_inputs(torch_model, ex, model.mask_id)
        attr, delta = ig.attribute(emb, baselines=base, target=int(ours.target[i]), additional_forward_args=(tt,),
                                   n_steps=50, method="gausslegendre", return_convergence_delta=True)
        theirs = attr.sum(-1)[0].numpy()
        n = len(ex["input_ids"])
        _close(np.asarray(ours.scores[i, :n]), theirs)
        assert float(ours.delta[i]) == pytest.approx(float(delta[0]), abs=1e-4)


def test_saliency_and_input_x_gradient_match_captum(setup):
    Saliency = _import("captum.attr", "Saliency")
    InputXGradient = _import("captum.attr", "InputXGradient")
    model, torch_model, exs, batch = setup
    both = jax.jit(lambda p, b: (saliency(p, model.cfg, b), grad_x_input(p, model.cfg, b)))
    sal, gxi = both(model.params, batch)
    f = _forward(torch_model)
    for i, ex in enumerate(exs):
        emb, _, tt = _torch_inputs(torch_model, ex, model.mask_id)
        special = torch.tensor(np.asarray(ex["word_ids"]) < 0)
        t = int(sal.target[i])
        s = Saliency(f).attribute(emb, target=t, additional_forward_args=(tt,), abs=True).sum(-1)[0]
        g = InputXGradient(f).attribute(emb, target=t, additional_forward_args=(tt,)).sum(-1)[0]
        n = len(ex["input_ids"])
        _close(np.asarray(sal.scores[i, :n]), s.masked_fill(special, 0).detach().numpy())
        _close(np.asarray(gxi.scores[i, :n]), g.masked_fill(special, 0).detach().numpy())


def test_sig_matches_tint(setup):
    SequentialIntegratedGradients = _import("tint.attr", "SequentialIntegratedGradients")
    model, torch_model, exs, batch = setup
    ours = jax.jit(lambda p, b: sequential_integrated_gradients(p, model.cfg, b, steps=50, mask_id=model.mask_id,
                                                                pad_id=model.pad_id))(model.params, batch)
    sig = SequentialIntegratedGradients(_forward(torch_model))
    for i, ex in enumerate(exs):
        emb, base, tt = _torch_inputs(torch_model, ex, model.mask_id)
        attr = sig.attribute(emb, baselines=base, target=int(ours.target[i]), additional_forward_args=(tt,),
                             n_steps=50, method="gausslegendre")
        raw = attr.sum(-1)[0]
        n = len(ex["input_ids"])
        _close(np.asarray(ours.raw[i, :n]), raw.detach().numpy())
        _close(np.asarray(ours.scores[i, :n]), (raw / torch.norm(raw)).detach().numpy())  # tint experiments' summarise
