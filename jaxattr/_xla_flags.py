"""XLA:CPU flags jaxattr sets before JAX starts its CPU backend (imported first by `jaxattr`).

jaxlib 0.10-0.11 hand elementwise/reduction fusions to YNNPACK by default; on the encoder's
backward pass that made a 50 x 256-token gradient 1.4x slower on our CPUs (benchmarks/RESULTS.md,
jax-ml/jax#37465 reports the same regression). We turn that offload off unless the user already
chose (`xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS) or opts out with JAXATTR_XLA_FLAGS=0.
Only for jaxlib versions known to have the flag: an unknown flag makes XLA abort.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
_KNOWN = ("0.10.", "0.11.")


def apply() -> bool:
    """Add the flag to XLA_FLAGS when it is safe and wanted; True if it was added."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXATTR_XLA_FLAGS") == "0" or "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    try:
        jaxlib_version = version("jaxlib")
    except PackageNotFoundError:
        return False
    if not jaxlib_version.startswith(_KNOWN):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}".strip()
    return True


apply()
