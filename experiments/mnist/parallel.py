"""Data parallelism over devices and hosts: one mesh, two shardings, and multi-host start-up.

One code path for 1..N devices on 1..M hosts (JAX's multi-controller runtime, the same program
on every process):

- :func:`make_mesh` lays ``jax.devices()`` (all devices of all processes) on a 1-D
  ``jax.sharding.Mesh`` with the axis ``"data"``.
- Params, optimizer state and the training images are replicated (:func:`replicate`); each global
  batch is split over the ``data`` axis (:func:`batch_sharding`, :func:`shard_batches`), so the
  jitted step computes per-device gradients and XLA inserts the all-reduce of their mean.
- With several processes, :func:`initialize_distributed` starts ``jax.distributed`` and each
  process supplies only the shards of the global batches that live on its own devices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# The environment variables --distributed reads when its flags are not given (JAX itself reads
# JAX_COORDINATOR_ADDRESS; without these, jax.distributed detects Slurm, Open MPI and Cloud TPU).
COORDINATOR_ADDRESS_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def initialize_distributed(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts JAX's multi-controller runtime; call it on every process before any computation.

    Arguments left ``None`` are read from ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``
    and ``$JAX_PROCESS_ID``; what is still missing is detected by ``jax.distributed.initialize``
    on Slurm, Open MPI and Cloud TPU.

    Raises:
      ValueError: an environment variable is not an integer, or JAX cannot determine the
        coordinator, the process count or this process's id.
    """

    def from_env(name: str) -> int | None:
        value = os.environ.get(name)
        if not value:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"${name} must be an integer, got {value!r}") from None

    if num_processes is None:
        num_processes = from_env(NUM_PROCESSES_ENV)
    if process_id is None:
        process_id = from_env(PROCESS_ID_ENV)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"--distributed: jax.distributed.initialize failed ({error}); pass "
            "--coordinator-address HOST:PORT --num-processes N --process-id I (or set "
            f"${COORDINATOR_ADDRESS_ENV}, ${NUM_PROCESSES_ENV}, ${PROCESS_ID_ENV}), or run under "
            "Slurm, Open MPI or on a Cloud TPU slice"
        ) from None


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with the axis ``"data"`` over ``devices`` (default: ``jax.devices()``)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value every device holds whole (params, optimizer state, images)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, axis: int = 0) -> NamedSharding:
    """The sharding that splits axis ``axis`` (the batch) over the mesh's ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Checks that a global batch splits evenly over the mesh's devices.

    Raises:
      ValueError: naming the batch size, the device count and the nearest valid batch sizes.
    """
    devices = mesh.size
    if batch_size % devices:
        below = max(devices, batch_size // devices * devices)
        raise ValueError(
            f"batch size {batch_size} does not split evenly over {devices} devices: pass a "
            f"multiple of {devices}, such as --batch-size {below} or "
            f"--batch-size {below + devices}"
        )


def _put(value: Any, sharding: NamedSharding) -> jax.Array:
    """One array, from host or device, as a global array of ``sharding``.

    Every process must pass the same value; each one supplies only the slices its own devices
    hold (``jax.make_array_from_callback``), so this works with one process or many. Typed PRNG
    keys travel as their key data.
    """
    if isinstance(value, jax.Array) and value.sharding == sharding:
        return value
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _put(jax.random.key_data(value), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    if sharding.is_fully_addressable:
        # One process: a copy that XLA owns (a zero-copy view of host memory must never be
        # donated to the training step).
        return jax.device_put(value, sharding, may_alias=False)
    host = np.array(value)  # a private copy: the new array may alias it
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every array of ``tree`` replicated on all devices of ``mesh`` (same value everywhere)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_batches(batches: Any, mesh: Mesh, *, axis: int = 0) -> jax.Array:
    """Global batches (same value on every process) split over ``data`` along ``axis``.

    Each process feeds only the shards of its own devices: with ``axis=1``, ``[steps, batch]``
    indices give every device its ``batch / num_devices`` columns of every step.
    """
    return _put(batches, batch_sharding(mesh, axis=axis))


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (every process must call it; one process: free)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def is_main_process() -> bool:
    """True on the process that writes metrics, pictures and messages (process 0)."""
    return jax.process_index() == 0
