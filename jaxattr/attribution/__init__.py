"""Attribution methods as pure functions, a method registry and a batched multi-device driver.

    from jaxattr.attribution import integrated_gradients, sig
    res = sig(params, cfg, batch, mask_id=tok.mask_token_id)          # under your own jit / vmap

`Driver` / `attribute_examples` run any registered method over a dataset in fixed-shape, bounded-memory chunks
sharded over all devices; `registry` lists methods and variants (`registry.names()`, `registry.label`);
`AttributionRecord` is the typed record they write (`read_records`, `ResultWriter`); a `Job` runs a driver over a
dataset into one resumable file, on one process, several, or as `--shard K/N` (`drive` is its loop).
"""

from jaxattr.attribution import registry
from jaxattr.attribution.driver import Driver, attribute_examples
from jaxattr.attribution.gradients import (
    Attribution,
    grad_x_input,
    gradient_shap,
    integrated_gradients,
    quadrature,
    saliency,
    word_scores,
)
from jaxattr.attribution.job import Job, drive
from jaxattr.attribution.results import AttributionRecord, ResultWriter, read_records
from jaxattr.attribution.sig import SIGAttribution, sequential_integrated_gradients

sig = sequential_integrated_gradients

__all__ = [
    "Attribution", "AttributionRecord", "Driver", "Job", "ResultWriter", "SIGAttribution", "attribute_examples",
    "drive", "grad_x_input", "gradient_shap", "integrated_gradients", "quadrature", "read_records", "registry",
    "saliency", "sequential_integrated_gradients", "sig", "word_scores",
]
