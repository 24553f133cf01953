"""Sharding decided in one place: a 1-D `data` mesh over every device, batch sharded, params replicated.

Multi-host runs call `initialize_distributed()` first (`jax.distributed.initialize`, gloo on CPU); the
mesh then spans every process's devices and each process feeds its own slice of the global batch.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def make_mesh(num_devices: int | None = None, *, local: bool = False) -> Mesh:
    """A mesh with one named axis `data` over the first `num_devices` devices (default: all); `local`:
    this process's devices only (attribution jobs: every process runs its own examples)."""
    devices = jax.local_devices() if local else jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices, {len(devices)} available")
    return Mesh(np.asarray(devices[:n]), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, other axes whole."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def pad_to_multiple(n: int, mesh: Mesh) -> int:
    """Smallest multiple of the mesh size >= n (batch sizes must divide evenly over devices)."""
    d = mesh.size
    return max(d, -(-n // d) * d)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Put a host batch (pytree of arrays with a leading batch axis) onto the mesh, batch-sharded."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)


def request_cpu_devices(n: int | None) -> None:
    """On a CPU-only host, ask XLA for `n` host devices (`--devices N`); only before the backend starts."""
    if n is None or n <= 1:
        return
    try:
        if not jax._src.xla_bridge.backends_are_initialized():  # noqa: SLF001 - the only way to ask
            jax.config.update("jax_num_cpu_devices", n)
    except (AttributeError, RuntimeError):
        pass


def initialize_distributed() -> bool:
    """Multi-process JAX, for every command (training, attribution): when launched as several processes
    (env JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES > 1, JAX_PROCESS_ID), `jax.distributed.initialize` from
    them, with gloo collectives for CPU processes. True when this process is one of several.

    Idempotent: a second call in the same process (a second command) leaves the first initialisation as it is.
    Call it before anything touches the devices."""
    from jax._src import distributed

    if distributed.global_state.client is not None:  # already initialised
        return True
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    processes = int(os.environ.get("JAX_NUM_PROCESSES", "1"))
    if not address or processes <= 1:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=processes,
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
    return True
