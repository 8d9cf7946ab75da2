"""Data-parallel placement for the occlusion engine (Algorithm 1, line 5 loop).

The paper's design asked for ``pmap``; since JAX 0.8 ``pmap`` is in maintenance
mode and is itself built on ``shard_map``, so this project uses the modern form:
a named 1-D mesh with a ``data`` axis, ``NamedSharding(mesh, P('data'))`` for
work items and ``P()`` (replicated) for model parameters, with ``jax.jit``
propagating the sharding through the model.  Batches are padded to a multiple
of the device count and the padding is dropped by the caller.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``('data',)`` over ``devices`` (default: all local devices).

    The axis type is pinned to ``Auto`` so that any jit-able model (including
    black boxes built on ``jax.pure_callback``) is partitioned by the compiler's
    sharding propagation; the batch axis is the only one we shard.

    In a multi-process run each process scores its own images, so the default
    is ``jax.local_devices()``, never the global device list.

    Args:
        devices: devices to span; ``jax.devices()[:1]`` gives a one-device mesh.

    Returns:
        The mesh.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: `devices` is empty; pass at least one jax device")
    return jax.make_mesh((len(devices),), (DATA_AXIS,),
                         axis_types=(AxisType.Auto,), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the ``data`` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that places a full copy on every device (parameters, image slabs)."""
    return NamedSharding(mesh, P())


def num_shards(mesh: Mesh) -> int:
    """Number of devices along the ``data`` axis."""
    return int(mesh.shape[DATA_AXIS])


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n`` (and >= ``multiple``)."""
    return max(multiple, -(-int(n) // multiple) * multiple)


def pad_to(x: np.ndarray, size: int, value: Any = 0) -> np.ndarray:
    """Pads the leading axis of a host array to ``size`` with ``value``.

    Args:
        x: array with ``len(x) <= size``.
        size: target leading dimension.
        value: fill for the padded rows.

    Returns:
        ``x`` itself when already of that size, otherwise a padded copy.
    """
    x = np.asarray(x)
    if len(x) > size:
        raise ValueError(f"pad_to: leading dimension {len(x)} exceeds target size {size}")
    if len(x) == size:
        return x
    pad = np.full((size - len(x),) + x.shape[1:], value, dtype=x.dtype)
    return np.concatenate([x, pad], axis=0)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (e.g. model parameters) on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))
