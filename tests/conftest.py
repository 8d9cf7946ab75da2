"""Test configuration: 8 fake CPU devices before JAX starts, asset folder.

Every multi-device path (named mesh, NamedSharding, shard_map) runs in every
test run because XLA is told to expose 8 host devices before jax is imported.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never download: resolution may only use local folders.
os.environ.setdefault("CMS_JAX_OFFLINE", "1")
_default_assets = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
if "CMS_JAX_ASSETS" not in os.environ and os.path.isdir(_default_assets):
    os.environ["CMS_JAX_ASSETS"] = os.path.abspath(_default_assets)

import pytest  # noqa: E402


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
