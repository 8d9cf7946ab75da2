"""XLA compiler options for the engine's jitted functions, per backend, where they win.

Options are given per function (``jax.jit(..., compiler_options=...)``), never
process-wide: what speeds up the occlusion programs can slow other programs of
the same process.

Measured (jaxlib 0.10.2, 2-core AMD EPYC CPU, gender mini-XCEPTION, 16 real
UTKFace faces, 1024 copies a batch, best of 3 interleaved runs):

* ``xla_cpu_experimental_ynn_fusion_type=""`` (no YNNPACK fusions): dense
  step 1.19x, incremental step 1.21x faster, compile time 2x shorter, drops
  equal to 6e-7. The issue that asked for it measured 1.35x on both and 0.85x
  on a plain 2048^2 matmul, so a process-wide ``XLA_FLAGS`` would cost the
  other programs.
* 1x1 convolutions of the dense tail as one dot over ``[B*H*W, C]`` (asked
  for by issue 23), batch 128 at the gender model's block shapes
  (8x8x64->128, 4x4x128->128, 16x16x32->64, 32x32x16->32): with these options
  the convolution runs at 129, 120, 90 and 71 GFLOP/s and the dot at 113,
  106, 101 and 63 (with YNN fusions on, the conv fell to 18-62), so XLA:CPU
  already runs them at the matmul rate and the rewrite was dropped
  (``/tmp`` microbenchmark, 2026-12-03; the note on issue 23 has the command).
"""
from __future__ import annotations

import jax

_CPU = {"xla_cpu_experimental_ynn_fusion_type": ""}


def engine_options(mesh: jax.sharding.Mesh | None = None) -> dict[str, str]:
    """Compiler options for the occlusion programs (dense step, clean pass, incremental step, embed).

    Args:
      mesh: the devices the program runs on (default: the default backend's).

    Returns:
      A dict for ``jax.jit(..., compiler_options=...)``; empty off the CPU.
    """
    platforms = ({d.platform for d in mesh.devices.flat} if mesh is not None
                 else {jax.default_backend()})
    return dict(_CPU) if platforms == {"cpu"} else {}
