"""Convert a Keras 2.x HDF5 full model (mini-XCEPTION gender / FER2013) to Orbax + model card.

Reading is h5py only (no TensorFlow), done by `cms_jax.models.keras_h5.read_h5`,
which validates every weight against the ``nnx.eval_shape`` tree. Known files
(``gender_mini_XCEPTION*``, ``fer2013_mini_XCEPTION*``) get their task's class
names and crop policy; others take them from the flags.

  python -m converters.keras_h5 --src ../shared/models/gender_mini_XCEPTION.21-0.95.hdf5 --out runs/gender
"""
from __future__ import annotations

import argparse

from cms_jax.models import keras_h5
from cms_jax.models.registry import load_keras
from converters import common


def convert(src: str, *, name=None, class_names=None, crop_policy=None, crop_margin=None):
    """HDF5 path -> (params, ModelCard), with the registry's card for known files."""
    model = load_keras(src, name=name, class_names=class_names, crop_policy=crop_policy, crop_margin=crop_margin)
    config, params = keras_h5.read_h5(src)
    card = keras_h5.card_from_config(config, name=model.name, class_names=model.class_names,
                                     crop_policy=model.crop_policy, crop_margin=model.crop_margin, source=src)
    return params, card


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="Keras .h5/.hdf5 full model (with model_config)")
    ap.add_argument("--out", required=True, help="output directory (Orbax params + model_card.json)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--class_names", default=None, help="comma-separated class names")
    ap.add_argument("--crop_policy", default=None, choices=("loose", "tight", "whole"))
    ap.add_argument("--crop_margin", type=float, default=None)
    args = ap.parse_args(argv)
    names = tuple(args.class_names.split(",")) if args.class_names else None
    params, card = convert(args.src, name=args.name, class_names=names, crop_policy=args.crop_policy,
                           crop_margin=args.crop_margin)
    print(f"wrote {common.save_converted(args.out, params, card)}")


if __name__ == "__main__":
    main()
