"""The drops backend of a run (Eq. 1): the one occlusion engine, set up from the run's flags.

`DropsBackend` resolves the occlusion side sz (``--patch_size``, 0: the model's
default), the forward strategy (``--incremental``: a black-box model is refused
with ``True`` and scored densely with ``'auto'``, the reason in
``forward_note``) and the compute dtype, and builds the `OcclusionEngine` on
this process's devices. A bfloat16 run, or an approximate one (``--approx_tau``
< 1), also measures, once, how its drops agree with float32 exact drops of the
same images (``summary.json["bf16_fidelity"]``, ``["approx_fidelity"]``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cms_jax import sharding
from cms_jax.engine import EngineResult, OcclusionEngine
from cms_jax.occlusion import default_patch_size


CPU_INCREMENTAL_BATCH = 128  # per device


def default_batch_size(forward: str, mesh) -> int:
    """Work items per device batch (all devices) when the run leaves ``--batch_size`` at 0.

    On the CPU the incremental step runs fastest at 128 copies a device: its windows then stay in
    cache (gender mini-XCEPTION, 16 real faces, 2-core EPYC, jaxlib 0.10.2, best of 2 interleaved:
    32: 12.8, 64: 13.6, 128: 15.7, 256: 11.1, 1024: 10.4 faces/s). The dense step is flat
    (128: 2.70, 1024: 2.75), and accelerators want large batches: 1024 there.
    """
    ndev = sharding.num_shards(mesh)
    cpu = {d.platform for d in mesh.devices.flat} == {"cpu"}
    return CPU_INCREMENTAL_BATCH * ndev if cpu and forward == "incremental" else max(1024, ndev)


@dataclasses.dataclass
class Fidelity:
    """How a bfloat16 or approximate run's drops agree with float32 exact drops: the one record of it.

    The backend measures it once (`DropsBackend.measure_fidelity`); the job's checkpoint and the
    all-gather of a multi-process run carry it as `as_dict`, and summary.json shows it as
    `summary_fields`.

    Attributes:
      bf16: Pearson of bfloat16 drops with float32 drops of the first measured chunk (None before).
      approx: ``approx_tau`` < 1: Pearson, largest absolute difference and vertices compared (None before).
    """
    bf16: float | None = None
    approx: dict | None = None

    def as_dict(self) -> dict:
        """``{"bf16_fidelity", "approx_fidelity"}``: the form checkpoints and processes exchange."""
        return {"bf16_fidelity": self.bf16, "approx_fidelity": self.approx}

    def update(self, saved: dict) -> None:
        """Take the values ``saved`` (an `as_dict`, from a checkpoint or a process) measured, where it has one."""
        if saved.get("bf16_fidelity") is not None:
            self.bf16 = saved["bf16_fidelity"]
        if saved.get("approx_fidelity") is not None:
            self.approx = saved["approx_fidelity"]

    @classmethod
    def first_of(cls, rows: list[dict]) -> "Fidelity":
        """The first value measured in ``rows`` (`as_dict`s in process order), per kind."""
        out = cls()
        for r in reversed(rows):
            out.update(r)
        return out

    def summary_fields(self, dtype: str, approx_tau: float) -> dict:
        """summary.json's keys: ``bf16_fidelity`` for bfloat16 runs, ``approx_fidelity`` for approximate ones."""
        out = {"bf16_fidelity": self.bf16} if dtype == "bfloat16" else {}
        if approx_tau < 1.0:
            out["approx_fidelity"] = self.approx
        return out


class DropsBackend:
    """The engine of one run and what it needs from the config.

    Attributes:
      model: the FaceModel.
      patch: the occlusion side sz in input pixels.
      forward: 'dense' or 'incremental' (what the engine runs).
      forward_note: why an ``incremental='auto'`` run is dense ('' otherwise).
      dtype: 'float32' or 'bfloat16'.
      engine: the `OcclusionEngine`.
      fidelity: the `Fidelity` of a bfloat16 or approximate run (empty before it is measured).
    """

    def __init__(self, cfg, model, devices=None):
        """Builds the engine.

        Args:
          cfg: the `RunConfig` (score, batch_size, patch_size, incremental, dtype, fill).
          model: the FaceModel.
          devices: the mesh's devices (default: this process's local devices).
        """
        if cfg.approx_tau < 1.0 and not cfg.incremental:
            raise ValueError(f"--approx_tau={cfg.approx_tau} approximates incremental inference; "
                             f"--noincremental scores densely (always exact): drop one of them")
        self.model, self.score, self.fill, self.dtype = model, cfg.score, float(cfg.fill), cfg.dtype
        self.fill_blur = float(getattr(cfg, "fill_blur", 0.0))
        self.requested_batch = cfg.batch_size  # 0: `default_batch_size` of the forward and devices
        self.patch = cfg.patch_size or default_patch_size(model.input_size[0])
        self.mesh = sharding.data_mesh(devices)
        self.approx_tau = float(cfg.approx_tau)
        self.forward, self.forward_note = ("incremental" if cfg.incremental else "dense"), ""
        if self.fill_blur > 0 and cfg.incremental:
            if cfg.incremental != "auto":
                raise ValueError(f"--fill_blur={self.fill_blur:g} fills each square with its image's own blurred "
                                 f"pixels, which the incremental forward does not take: drop --incremental")
            self.forward, self.forward_note = "dense", "incremental unavailable: --fill_blur needs the dense forward"
        try:
            self.engine = self._engine(self.dtype)
        except ValueError as e:
            if cfg.incremental != "auto" or "Drop --incremental" not in str(e):
                raise
            if self.approx_tau < 1.0:
                raise ValueError(f"--approx_tau={self.approx_tau} approximates incremental inference, which "
                                 f"model {model.name!r} cannot take: {e}") from None
            self.forward, self.forward_note = "dense", f"incremental unavailable: {e}"
            self.engine = self._engine(self.dtype)
        self.fidelity = Fidelity()
        self._fp32: OcclusionEngine | None = None

    def _engine(self, dtype: str, approx_tau: float | None = None) -> OcclusionEngine:
        tau = self.approx_tau if approx_tau is None else approx_tau
        self.batch_size = self.requested_batch or default_batch_size(self.forward, self.mesh)
        return OcclusionEngine(self.model, score=self.score, batch_size=self.batch_size, images_per_block=16,
                               mesh=self.mesh, forward=self.forward, dtype=dtype, patch_size=self.patch,
                               approx_tau=tau)

    def drops(self, x, xy, valid, targets=None, patch_size: int = 0) -> EngineResult:
        """Eq. 1 at every valid vertex of preprocessed inputs ``x`` (N, H, W, C) (`OcclusionEngine.run`).

        ``patch_size`` 0 uses the run's ``patch``; targets as `OcclusionEngine.run`.
        """
        return self.engine.run(x, xy, valid=valid, targets=targets, patch_size=patch_size or self.patch,
                               fill=self.fill_of(x))

    def fill_of(self, x):
        """What the squares of ``x``'s copies take: the constant ``fill``, or with ``fill_blur`` each
        image blurred (`occlusion.blurred`)."""
        if self.fill_blur > 0:
            from cms_jax.occlusion import blurred
            return blurred(x, self.fill_blur)
        return self.fill

    def embed(self, x) -> np.ndarray:
        """The model's clean outputs (embeddings) of preprocessed inputs (`OcclusionEngine.embed`)."""
        return self.engine.embed(x)

    def measure_fidelity(self, res: EngineResult, x, xy, targets) -> None:
        """For a bfloat16 or approximate run not yet measured: its drops against float32 exact drops.

        ``res`` (this run's drops of ``x``) is compared with float32, exact (``approx_tau`` 1) drops
        of the same images and targets: ``fidelity.bf16`` (bfloat16 runs) is their Pearson
        correlation; ``fidelity.approx`` (``approx_tau`` < 1) holds the Pearson correlation, the
        largest absolute difference and the vertices compared. Both stay None when the drops are
        constant (then the next chunk is tried).
        """
        need_bf16 = self.dtype == "bfloat16" and self.fidelity.bf16 is None
        need_approx = self.approx_tau < 1.0 and self.fidelity.approx is None
        if not (need_bf16 or need_approx):
            return
        self._fp32 = self._fp32 or self._engine("float32", 1.0)
        same = res.targets if self.engine.mode != "cosine" else targets  # the classes this run scored
        ref = self._fp32.run(x, xy, valid=res.valid, targets=same, patch_size=self.patch, fill=self.fill_of(x))
        valid = np.asarray(res.valid)
        if res.drops.ndim == 3:  # several references per image (pair audits): (N, V, R) drops
            valid = valid[..., None]
            if targets is not None and np.ndim(targets) == 3:  # zero rows pad the references: not scored
                valid = valid & (np.linalg.norm(np.asarray(targets, np.float32), axis=-1) > 0)[:, None, :]
        keep = np.broadcast_to(valid, res.drops.shape) & np.isfinite(res.drops) & np.isfinite(ref.drops)
        a, b = res.drops[keep], ref.drops[keep]
        if a.size < 2 or a.std() == 0 or b.std() == 0:
            return
        self._fp32 = None  # only the first chunk is compared: free its weights and compiled steps
        r = float(np.corrcoef(a, b)[0, 1])
        if self.dtype == "bfloat16":
            self.fidelity.bf16 = r
        if self.approx_tau < 1.0:
            self.fidelity.approx = {"approx_tau": self.approx_tau, "pearson": r,
                                    "max_abs_diff": float(np.abs(a - b).max()), "vertices": int(a.size),
                                    "against": "float32 exact incremental, first scored chunk"}
