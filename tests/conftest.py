"""Test configuration: 8 fake CPU devices before JAX starts, asset folder.

Every multi-device path (named mesh, NamedSharding, shard_map) runs in every
test run because XLA is told to expose 8 host devices before jax is imported.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
# CMS_JAX_TEST_ACCELERATOR=1 leaves JAX its accelerator (the tests marked ``gpu`` then run); otherwise CPU.
if os.environ.get("CMS_JAX_TEST_ACCELERATOR") != "1":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never download: resolution may only use local folders.
os.environ.setdefault("CMS_JAX_OFFLINE", "1")
_default_assets = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
if "CMS_JAX_ASSETS" not in os.environ and os.path.isdir(_default_assets):
    os.environ["CMS_JAX_ASSETS"] = os.path.abspath(_default_assets)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, with the reason, unless JAX's default backend is an accelerator."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import jax
    backend = jax.default_backend()
    if backend != "cpu":
        return
    why = ("needs an accelerator: JAX runs on the CPU here (run with CMS_JAX_TEST_ACCELERATOR=1 on a machine "
           "with a GPU or TPU)")
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=why))


def _assets_root():
    root = os.environ.get("CMS_JAX_ASSETS")
    return root if root and os.path.isdir(root) else None


@pytest.fixture(scope="session")
def shared_dir():
    """The shared asset folder (``CMS_JAX_ASSETS``); skips with the reason if absent."""
    root = _assets_root()
    if root is None:
        pytest.skip("shared assets absent: set CMS_JAX_ASSETS to the folder holding assets/, models/, faces/")
    return root


@pytest.fixture(scope="session")
def celeba_copy(shared_dir):
    """``copy(dest, n, start=0, bad=False)``: the CelebA samples ``[start, start + n)`` (sorted) copied into
    the folder ``dest`` (created), plus ``zz_bad.jpg`` (text named .jpg) when ``bad``; returns ``str(dest)``."""
    import shutil

    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    names = sorted(os.listdir(src))

    def copy(dest, n, start=0, bad=False):
        os.makedirs(dest, exist_ok=True)
        for name in names[start:start + n]:
            shutil.copy(os.path.join(src, name), os.path.join(dest, name))
        if bad:
            with open(os.path.join(dest, "zz_bad.jpg"), "w") as f:
                f.write("not an image")
        return str(dest)

    return copy
