"""The type aliases every layer shares (one definition instead of a local copy per module)."""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
Params = dict[str, Any]  # a parameter tree: {"encoder": ..., "head": ...} as `init_params` makes it
Batch = dict[str, jax.Array]  # [B, T] arrays as `jaxattr.data.batch` describes them
