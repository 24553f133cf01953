"""Attribution methods as pure functions, a method registry and a batched multi-device driver.

    from jaxattr.attribution import integrated_gradients, sig
    res = sig(params, cfg, batch, mask_id=tok.mask_token_id)          # under your own jit / vmap

`Driver` / `attribute_examples` (in `jaxattr.attribution.driver`) run any registered method over a
dataset in fixed-shape, bounded-memory chunks sharded over all devices; `registry` lists methods.
"""

from jaxattr.attribution.gradients import (
    Attribution,
    grad_x_input,
    gradient_shap,
    integrated_gradients,
    quadrature,
    saliency,
    word_scores,
)
from jaxattr.attribution.sig import SIGAttribution, sequential_integrated_gradients

sig = sequential_integrated_gradients

__all__ = [
    "Attribution", "SIGAttribution", "grad_x_input", "gradient_shap", "integrated_gradients", "quadrature",
    "saliency", "sequential_integrated_gradients", "sig", "word_scores",
]
