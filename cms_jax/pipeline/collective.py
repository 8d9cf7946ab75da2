"""Moving a run's results between JAX processes with JAX's own collectives (no shared disk).

A CMS is a sum and a count (Eq. 6), so combining the shards of a multi-host
run is an all-reduce. Everything a process contributes (accumulator sums in
float64, counts, per-image drops, file names, skipped reasons) is serialised
to bytes and all-gathered as uint8 arrays over ``jax.distributed``'s
collectives (``multihost_utils.process_allgather``; Gloo on CPU, NCCL/ICI on
accelerators). Bytes travel exactly, so float64 sums survive JAX's default
32-bit mode bit for bit. Large payloads go in fixed-size blocks, so no
collective buffer is bigger than ``block_bytes`` per process.

Processes reach the end of their shares at different times (a resumed
process may have hours left while the others are done), and the first Gloo
collective gives up after 30 s. So `wait_for_all` first meets the others at a
barrier of the ``jax.distributed`` coordination service, whose timeout is the
caller's; a process that dies meanwhile is noticed by its heartbeat.

With one process every function returns its input without touching JAX's
distributed runtime.
"""
from __future__ import annotations

import io
import json

import numpy as np

BLOCK_BYTES = 64 << 20


def _count() -> int:
    import jax
    return jax.process_count()


def _allgather(x: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x))


def wait_for_all(name: str, timeout_s: float = 7 * 24 * 3600.0) -> None:
    """Block until every process has reached the barrier ``name`` (no-op with one process)."""
    if _count() == 1:
        return
    # Private on purpose: the public barrier (multihost_utils.sync_global_devices) has no timeout and runs
    # a device computation; the coordination client's named barrier (as jax's own serialization uses it)
    # has both a timeout and no device work, which a preemptible multi-host job needs.
    from jax._src import distributed
    distributed.global_state.client.wait_at_barrier(f"cms_jax_{name}", timeout_in_ms=int(timeout_s * 1000))


def gather_bytes(blob: bytes, block_bytes: int = BLOCK_BYTES) -> list[bytes]:
    """Every process's ``blob``, in process order, on every process."""
    if _count() == 1:
        return [bytes(blob)]
    sizes = _allgather(np.asarray([len(blob)], np.int32))[:, 0]
    longest = int(sizes.max())
    data = np.frombuffer(blob, np.uint8)
    out = [bytearray() for _ in sizes]
    for lo in range(0, max(longest, 1), block_bytes):
        piece = np.zeros(min(block_bytes, max(longest - lo, 1)), np.uint8)
        mine = data[lo:lo + len(piece)]
        piece[:len(mine)] = mine
        got = _allgather(piece)
        for k, n in enumerate(sizes):
            out[k] += got[k, :max(0, min(len(piece), int(n) - lo))].tobytes()
    return [bytes(b) for b in out]


def gather_json(obj) -> list:
    """Every process's JSON-able ``obj``, in process order, on every process."""
    return [json.loads(b.decode()) for b in gather_bytes(json.dumps(obj).encode())]


def gather_arrays(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every process's dict of numpy arrays (any dtype, exact), in process order, on every process."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = []
    for blob in gather_bytes(buf.getvalue()):
        with np.load(io.BytesIO(blob)) as z:
            out.append({k: z[k] for k in z.files})
    return out


def barrier_with_status(error: str | None) -> list[str]:
    """Every process says whether it failed; returns the errors of all processes (empty when none).

    A process that stops on its own failure still calls this, so the others learn of it and stop
    too instead of waiting for it forever. It is the run's first meeting, so it waits at a
    barrier first (see the module docstring).
    """
    wait_for_all("end_of_shares")
    return [e for e in gather_json(error) if e]
