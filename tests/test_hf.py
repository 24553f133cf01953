"""HF directory import/export: round trip through transformers, and one-line errors naming the culprit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers
from hf_tiny import FAMILIES, hf_logits, random_batch, save_tiny
from safetensors.numpy import load_file, save_file

from jaxattr.errors import UserError
from jaxattr.models import forward_batch, load_hf_dir, save_hf_dir


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_to_jaxattr_to_hf_same_logits(tmp_path, family):
    original = save_tiny(family, tmp_path / "in", num_labels=3, seed=1)
    cfg, params = load_hf_dir(tmp_path / "in")
    assert cfg.label_names == ("class0", "class1", "class2")
    save_hf_dir(cfg, params, tmp_path / "out")
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    assert type(exported) is type(original)
    assert exported.config.id2label == original.config.id2label
    batch = random_batch(family, seed=5)
    before, after = hf_logits(original, batch, family), hf_logits(exported, batch, family)
    np.testing.assert_array_equal(after, before)  # every tensor copied bit for bit
    np.testing.assert_allclose(np.asarray(forward_batch(params, cfg, batch).logits), after, atol=1e-5, rtol=0)
    # And the exported weights are exactly the original state dict.
    sd_in, sd_out = original.state_dict(), exported.state_dict()
    for k, v in sd_in.items():
        if k.endswith("position_ids") or k.endswith("token_type_ids"):
            continue
        np.testing.assert_array_equal(sd_out[k].numpy(), v.numpy(), err_msg=k)


def test_base_encoder_gets_a_fresh_seeded_head(tmp_path):
    save_tiny("bert", tmp_path, num_labels=3)
    cfg, a = load_hf_dir(tmp_path, num_labels=5, seed=7)
    _, b = load_hf_dir(tmp_path, num_labels=5, seed=7)
    _, c = load_hf_dir(tmp_path, num_labels=5, seed=8)
    assert cfg.num_labels == 5 and a["head"]["out"]["kernel"].shape == (32, 5)
    np.testing.assert_array_equal(a["head"]["out"]["kernel"], b["head"]["out"]["kernel"])
    assert not np.array_equal(a["head"]["out"]["kernel"], c["head"]["out"]["kernel"])


def _one_line_error(fn, *needles):
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    _one_line_error(lambda: load_hf_dir(tmp_path), "gpt2", "unsupported")


def test_missing_files(tmp_path):
    _one_line_error(lambda: load_hf_dir(tmp_path), "config.json")
    save_tiny("bert", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    _one_line_error(lambda: load_hf_dir(tmp_path), "model.safetensors", str(tmp_path))


def test_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    _one_line_error(lambda: load_hf_dir(tmp_path), "config.json", "malformed")


def test_shape_mismatch_and_missing_tensor_are_named(tmp_path):
    save_tiny("roberta", tmp_path)
    path = tmp_path / "model.safetensors"
    sd = load_file(str(path))
    name = "roberta.encoder.layer.1.attention.self.key.weight"
    sd[name] = sd[name][:, :16].copy()
    save_file(sd, str(path))
    _one_line_error(lambda: load_hf_dir(tmp_path), name, "shape", "(32, 16)")
    del sd[name]
    save_file(sd, str(path))
    _one_line_error(lambda: load_hf_dir(tmp_path), name, "missing")


def test_corrupt_weights_file(tmp_path):
    save_tiny("distilbert", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    _one_line_error(lambda: load_hf_dir(tmp_path), "model.safetensors")


def test_pytorch_bin_checkpoint(tmp_path):
    """Older HF dirs ship `pytorch_model.bin` (read with torch) instead of safetensors."""
    import torch

    model = save_tiny("electra", tmp_path, num_labels=2, seed=4)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    cfg, params = load_hf_dir(tmp_path)
    batch = random_batch("electra", seed=6)
    np.testing.assert_allclose(np.asarray(forward_batch(params, cfg, batch).logits), hf_logits(model, batch, "electra"),
                               atol=1e-5, rtol=0)


def test_sharded_safetensors(tmp_path):
    """Large Hub checkpoints ship `model.safetensors.index.json` and shards; a missing shard is named."""
    model = save_tiny("roberta", tmp_path / "one", num_labels=2, seed=3)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    cfg, params = load_hf_dir(tmp_path / "sharded")
    batch = random_batch("roberta", seed=2)
    np.testing.assert_allclose(np.asarray(forward_batch(params, cfg, batch).logits), hf_logits(model, batch, "roberta"),
                               atol=1e-5, rtol=0)
    (tmp_path / "sharded" / shards[-1]).unlink()
    _one_line_error(lambda: load_hf_dir(tmp_path / "sharded"), shards[-1], "missing")


@pytest.mark.parametrize("extra,needle", [({"position_embedding_type": "relative_key"}, "relative_key"),
                                          ({"problem_type": "multi_label_classification"}, "multi_label")])
def test_unsupported_config_switches_are_refused_not_ignored(tmp_path, extra, needle):
    save_tiny("bert", tmp_path, num_labels=3, **extra)
    _one_line_error(lambda: load_hf_dir(tmp_path), needle, "not supported")


def test_modernbert_legacy_config_keys_and_refusals(tmp_path):
    """Hub configs from before transformers v5 carry global_attn_every_n_layers and global/local_rope_theta
    instead of layer_types/rope_parameters; unsupported layer patterns and RoPE scalings are refused."""
    from jaxattr.models.hf import config_from_hf

    legacy = {"model_type": "modernbert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
              "num_attention_heads": 4, "intermediate_size": 37, "global_attn_every_n_layers": 3,
              "global_rope_theta": 1234.0, "local_rope_theta": 99.0, "local_attention": 16}
    cfg = config_from_hf(legacy)
    assert (cfg.global_attn_every_n_layers, cfg.global_rope_theta, cfg.local_rope_theta) == (3, 1234.0, 99.0)
    assert cfg.local_attention == 16 and not cfg.norm_bias and cfg.classifier_pooling == "cls"
    v5 = dict(legacy, layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5.0},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 7.0}})
    cfg = config_from_hf(v5)
    assert (cfg.global_attn_every_n_layers, cfg.global_rope_theta, cfg.local_rope_theta) == (3, 5.0, 7.0)
    odd = dict(v5, layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
    (tmp_path / "config.json").write_text(json.dumps(odd))
    _one_line_error(lambda: load_hf_dir(tmp_path), "layer_types", "not supported")
    scaled = dict(legacy, rope_scaling={"rope_type": "linear", "factor": 2.0})
    (tmp_path / "config.json").write_text(json.dumps(scaled))
    _one_line_error(lambda: load_hf_dir(tmp_path), "rope_scaling", "not supported")


@pytest.mark.parametrize("extra,needle", [({"conv_kernel_size": 3}, "conv_kernel_size"),
                                          ({"relative_attention": False}, "relative_attention=False"),
                                          ({"norm_rel_ebd": "layer_norm|other"}, "norm_rel_ebd"),
                                          ({"pooler_hidden_act": "swish"}, "pooler_hidden_act")])
def test_unsupported_deberta_switches_are_refused(tmp_path, extra, needle):
    save_tiny("deberta-v2", tmp_path, **extra)  # the tiny model has no absolute positions
    _one_line_error(lambda: load_hf_dir(tmp_path), needle, "not supported")


@pytest.mark.parametrize("extra", [dict(position_biased_input=True, type_vocab_size=2, share_att_key=False,
                                        pos_att_type=["c2p"]),
                                   dict(share_att_key=False, pos_att_type=["p2c"], embedding_size=16)])
def test_deberta_v2_layouts_export_to_hf(tmp_path, extra):
    """v2-style (absolute positions, token types, separate pos_key_proj) and embed_proj/pos_query_proj."""
    original = save_tiny("deberta-v2", tmp_path / "in", seed=2, **extra)
    cfg, params = load_hf_dir(tmp_path / "in")
    save_hf_dir(cfg, params, tmp_path / "out")
    exported = transformers.DebertaV2ForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    batch = random_batch("deberta-v2", seed=3)
    np.testing.assert_array_equal(hf_logits(exported, batch, "deberta-v2"), hf_logits(original, batch, "deberta-v2"))
    assert set(exported.state_dict()) == set(original.state_dict())
    for k, v in original.state_dict().items():
        np.testing.assert_array_equal(exported.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_deberta_v3_base_config_round_trips():
    """microsoft/deberta-v3-base's config.json (its DeBERTa keys, as published) maps onto our switches,
    a key left at DebertaV2Config's default takes that default, and config_to_hf gives the config back."""
    from jaxattr.models.hf import config_from_hf, config_to_hf

    v3 = {"model_type": "deberta-v2", "vocab_size": 128100, "hidden_size": 768, "num_hidden_layers": 12,
          "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
          "relative_attention": True, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
          "share_att_key": True, "pos_att_type": "p2c|c2p", "position_biased_input": False,
          "max_relative_positions": -1, "pooler_dropout": 0, "pooler_hidden_act": "gelu"}
    cfg = config_from_hf(v3)
    assert (cfg.family, cfg.pos_att_type, cfg.position_buckets, cfg.norm_rel_ebd) == ("deberta-v2", ("c2p", "p2c"),
                                                                                      256, True)
    assert cfg.type_vocab_size == 0 and cfg.layer_norm_eps == 1e-7 and not cfg.position_biased_input
    assert config_from_hf(config_to_hf(cfg)) == cfg
    assert transformers.DebertaV2Config(**config_to_hf(cfg)).pos_att_type == ["c2p", "p2c"]
