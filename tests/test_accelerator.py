"""The occlusion engine on an accelerator gives the CPU's drops (dense and incremental forward).

Marked ``gpu``: it skips, with the reason, where JAX has only the CPU (as in CI here); on a machine with a
GPU or TPU run ``CMS_JAX_TEST_ACCELERATOR=1 python -m pytest -q -m gpu tests``. Both meshes live in one
process: the accelerator's devices and the host's CPU device, the same model and inputs on each.
"""
import jax
import numpy as np
import pytest

from cms_jax import sharding as shd
from cms_jax.engine import OcclusionEngine
from cms_jax.models import tiny_vgg

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("forward", ["dense", "incremental"])
def test_accelerator_drops_equal_cpu_drops(forward):
    model = tiny_vgg(num_classes=3, input_size=32, seed=0)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    xy = rng.uniform(-2, 34, (4, 60, 2)).astype(np.float32)
    with jax.default_matmul_precision("highest"):  # no TF32 on the GPU: the drops are small logit changes
        accel = OcclusionEngine(model, score="logit", batch_size=64, forward=forward,
                                mesh=shd.data_mesh(jax.devices())).run(images, xy)
        cpu = OcclusionEngine(model, score="logit", batch_size=64, forward=forward,
                              mesh=shd.data_mesh(jax.devices("cpu")[:1])).run(images, xy)
    assert jax.devices()[0].platform != "cpu"
    assert np.abs(cpu.drops).max() > 1e-5  # tiny_vgg's random weights: logit drops ~1e-4
    np.testing.assert_array_equal(accel.targets, cpu.targets)
    # Reassociated float32 reductions on the accelerator: equal to 1% of the largest drop.
    np.testing.assert_allclose(accel.drops, cpu.drops, atol=1e-2 * np.abs(cpu.drops).max())
