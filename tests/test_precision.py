"""--dtype bfloat16 / --matmul-precision on the attribution commands: the runs complete, parameters stay
float32, and bf16 maps stay close to float32 ones (on a tiny random model; docs/ numbers are on MiniLM)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TEXTS, attribute
from scipy.stats import spearmanr

from jaxattr.attribution.results import read_results
from jaxattr.models.loading import load_model
from jaxattr.models.precision import matmul_precision, with_dtype


def test_with_dtype_keeps_float32_params(model_dir):
    m = with_dtype(load_model(model_dir), "bfloat16")
    assert m.cfg.compute_dtype == jnp.bfloat16
    assert m.params["layers"]["query"]["kernel"].dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        with_dtype(m, "float16")
    with pytest.raises(ValueError, match="precision"):
        with matmul_precision("fastest"):
            pass


@pytest.mark.parametrize("method,extra", [("ig", ["--steps", "8"]), ("sig", ["--steps", "4"]),
                                          ("iba", ["--steps", "4"])])
def test_bf16_runs_complete_and_agree_with_fp32(model_dir, tmp_path, method, extra):
    texts = [a for t in TEXTS[:3] for a in ("--text", t)]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.jsonl"
        assert attribute(model_dir, "--method", method, *extra, *texts, "--out", out, "--dtype", dtype,
                         "--matmul-precision", "highest") == 0
        runs[dtype] = read_results(out)
    for a, b in zip(runs["float32"], runs["bfloat16"]):
        sa, sb = np.asarray(a["scores"]), np.asarray(b["scores"])
        assert np.all(np.isfinite(sb)) and sa.shape == sb.shape
        assert spearmanr(sa[1:-1], sb[1:-1]).statistic > 0.8, (method, sa, sb)
