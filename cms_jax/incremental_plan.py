"""Static window plan for exact incremental occlusion inference (Eqs. 1-3).

Occluding one ``sz x sz`` square (Eq. 2) changes only a small window of each
early feature map of a conv/ReLU/max-pool stack. This module computes, for a
VGG-family architecture, the *static* size of that window at every layer:

  * input image: ``min(sz, H)``,
  * 3x3 'SAME' stride-1 conv: ``min(h + 2, H)`` (one halo row per side),
  * 2x2/2 max pool: ``min(h // 2 + 1, H // 2)`` (an odd start adds a row),

and the layer from which the window covers so much of the map that the full
computation is cheaper (Krypton, Nakandala et al. 2019). The window's
*position* is dynamic (it depends on the vertex) and is computed in
``cms_jax.incremental``; it is clamped so the window stays inside the map.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class VGGArch:
    """A VGG-family conv stack followed by fully connected layers.

    Every conv is 3x3, stride 1, 'SAME' padding, followed by ReLU; every block
    ends with a 2x2 stride-2 'VALID' max pool; the pooled map is flattened in
    (H, W, C) order and fed to the ``fc*`` layers (ReLU between them).
    """

    blocks: tuple[int, ...] = (2, 2, 3, 3, 3)  # conv layers per block (VGG-16)
    input_hw: tuple[int, int] = (224, 224)  # model input size (H, W)

    def layers(self) -> tuple[tuple[str, str], ...]:
        """Returns the ``(kind, name)`` sequence: kind is 'conv' or 'pool'."""
        out = []
        for b, n in enumerate(self.blocks, start=1):
            out += [("conv", f"conv{b}_{i}") for i in range(1, n + 1)]
            out.append(("pool", f"pool{b}"))
        return tuple(out)

    def conv_names(self) -> tuple[str, ...]:
        return tuple(name for kind, name in self.layers() if kind == "conv")

    def feature_hw(self) -> tuple[int, int]:
        """Spatial size of the last pooled map (the flatten before fc6)."""
        h, w = self.input_hw
        for _ in self.blocks:
            h, w = h // 2, w // 2
        return h, w


VGG16 = VGGArch()


@dataclasses.dataclass(frozen=True)
class LayerWindow:
    """The static plan for one layer.

    Attributes:
      kind: 'conv' or 'pool'.
      name: layer name (``conv1_1`` ... or ``pool1`` ...).
      in_hw: size of the map entering the layer.
      out_hw: size of the map leaving it.
      win_in: static window size (h, w) entering the layer.
      win_out: static window size leaving it.
      incremental: True when only the window is recomputed; False from the
        first layer computed in full (every later layer is full too).
    """

    kind: str
    name: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    win_in: tuple[int, int]
    win_out: tuple[int, int]
    incremental: bool


def _grow(kind: str, win: int, out_size: int) -> int:
    if kind == "conv":
        return min(win + 2, out_size)  # 3x3 kernel: one halo row/column per side
    return min(win // 2 + 1, out_size)  # 2x2/2 pool: an odd start straddles one more cell


def make_plan(arch: VGGArch, patch_size: int, switch_fraction: float = 0.9) -> tuple[LayerWindow, ...]:
    """Computes the per-layer static windows for a square patch.

    Args:
      arch: the architecture.
      patch_size: side ``sz`` of the occluding square, in input pixels.
      switch_fraction: switch to full computation from the first layer whose
        output window covers at least this fraction of its map (the windowed
        path then saves little and pays gather/scatter overheads).

    Returns:
      One ``LayerWindow`` per layer of ``arch.layers()``.

    Raises:
      ValueError: for a non-positive patch size, a fraction outside (0, 1], or
        an input too small for the number of pools.
    """
    if int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    if not 0.0 < switch_fraction <= 1.0:
        raise ValueError(f"switch_fraction must be in (0, 1], got {switch_fraction!r}")
    if min(arch.feature_hw()) < 1:
        raise ValueError(f"input {arch.input_hw} is too small for {len(arch.blocks)} 2x2 pools")
    h, w = arch.input_hw
    wh, ww = min(patch_size, h), min(patch_size, w)
    incremental = True
    plan = []
    for kind, name in arch.layers():
        oh, ow = (h, w) if kind == "conv" else (h // 2, w // 2)
        nh, nw = _grow(kind, wh, oh), _grow(kind, ww, ow)
        if incremental and nh * nw >= switch_fraction * oh * ow:
            incremental = False
        plan.append(LayerWindow(kind, name, (h, w), (oh, ow), (wh, ww), (nh, nw), incremental))
        h, w, wh, ww = oh, ow, nh, nw
    return tuple(plan)


def plan_flops(plan: tuple[LayerWindow, ...], channels: dict[str, tuple[int, int]]) -> tuple[float, float]:
    """Multiply-add FLOPs (x2) of the conv layers: (incremental, dense) per occluded copy.

    Args:
      plan: from ``make_plan``.
      channels: conv name -> (Cin, Cout).

    Returns:
      (flops of the incremental path, flops of the dense path), convs only.
    """
    inc = dense = 0.0
    for layer in plan:
        if layer.kind != "conv":
            continue
        cin, cout = channels[layer.name]
        per_pixel = 2.0 * 9 * cin * cout
        full = per_pixel * layer.out_hw[0] * layer.out_hw[1]
        dense += full
        inc += per_pixel * layer.win_out[0] * layer.win_out[1] if layer.incremental else full
    return inc, dense


def init_params(arch: VGGArch, channels=(64, 128, 256, 512, 512), fc=(4096, 4096), num_classes=2622,
                in_channels=3, seed=0) -> dict:
    """Random He-initialised params in the plain layout (benchmarks, tests: FLOPs matter, not values)."""
    rng = np.random.default_rng(seed)
    params, cin = {}, in_channels
    for b, n in enumerate(arch.blocks):
        for i in range(1, n + 1):
            k = (rng.standard_normal((3, 3, cin, channels[b])) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
            params[f"conv{b + 1}_{i}"] = {"kernel": k, "bias": np.full(channels[b], 0.01, np.float32)}
            cin = channels[b]
    fh, fw = arch.feature_hw()
    dims = (fh * fw * cin, *fc, num_classes)
    for j in range(len(dims) - 1):
        k = (rng.standard_normal(dims[j:j + 2]) * np.sqrt(2.0 / dims[j])).astype(np.float32)
        params[f"fc{6 + j}"] = {"kernel": k, "bias": np.zeros(dims[j + 1], np.float32)}
    return params


def _leaf(x):
    x = getattr(x, "value", x)  # nnx.Variable / nnx.Param -> array
    return np.asarray(x, np.float32)


def vgg_params(tree, arch: VGGArch) -> dict:
    """Extracts the plain params dict from a nested mapping (e.g. ``nnx.state(model)``).

    Args:
      tree: mapping with ``tree[name]['kernel']`` / ``['bias']`` for every
        ``conv*`` layer of ``arch`` and ``fc*`` layers (other keys ignored).
      arch: the architecture the params must fit.

    Returns:
      {name: {'kernel': np.float32, 'bias': np.float32}}.

    Raises:
      ValueError: ONE error listing every missing or mis-shaped weight.
    """
    problems, out, cin = [], {}, None
    names = list(arch.conv_names()) + sorted((k for k in tree if str(k).startswith("fc")), key=lambda k: int(k[2:]))
    for name in names:
        layer = tree.get(name) if hasattr(tree, "get") else None
        if layer is None or "kernel" not in layer or "bias" not in layer:
            problems.append(f"{name}: missing (need 'kernel' and 'bias')")
            continue
        k, b = _leaf(layer["kernel"]), _leaf(layer["bias"])
        conv = name.startswith("conv")
        if conv and (k.ndim != 4 or k.shape[:2] != (3, 3) or (cin is not None and k.shape[2] != cin)):
            problems.append(f"{name}: kernel shape {k.shape}, expected (3, 3, {cin or 'Cin'}, Cout)")
        elif not conv and k.ndim != 2:
            problems.append(f"{name}: kernel shape {k.shape}, expected (D_in, D_out)")
        elif b.shape != (k.shape[-1],):
            problems.append(f"{name}: bias shape {b.shape}, expected ({k.shape[-1]},)")
        if conv and k.ndim == 4:
            cin = k.shape[-1]
        out[name] = {"kernel": k, "bias": b}
    fcs = [n for n in names if n.startswith("fc")]
    if not fcs:
        problems.append("no fc* layers found")
    elif "kernel" in out.get(fcs[0], {}) and cin is not None:
        fh, fw = arch.feature_hw()
        if out[fcs[0]]["kernel"].shape[0] != fh * fw * cin:
            problems.append(f"{fcs[0]}: kernel has {out[fcs[0]]['kernel'].shape[0]} inputs, expected "
                            f"{fh}*{fw}*{cin} = {fh * fw * cin} for input {arch.input_hw}")
    if problems:
        raise ValueError("VGG params do not fit " + repr(arch) + ":\n  " + "\n  ".join(problems))
    return out
