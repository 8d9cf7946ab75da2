"""Tests of exact waste removal (cms_jax/work_items.py) and of the engine that uses it."""
import jax
import numpy as np
import pytest

from cms_jax import occlusion as occ
from cms_jax import work_items as wi
from cms_jax.engine import OcclusionEngine
from tests.test_engine import H, W, face_model


def test_unique_items_keeps_one_item_per_image_and_square():
    image = np.array([0, 0, 1, 0, 1, 1])
    boxes = np.array([[1, 5, 2, 6], [1, 5, 2, 6], [1, 5, 2, 6], [0, 4, 2, 6], [9, 9, 9, 9], [1, 5, 2, 6]])
    keep, inverse = wi.unique_items(image, boxes)
    assert len(keep) == 4  # (0, A), (0, B), (1, A), (1, empty)
    np.testing.assert_array_equal(image[keep][inverse], image)
    np.testing.assert_array_equal(boxes[keep][inverse], boxes)
    assert list(image[keep]) == sorted(image[keep])  # grouped by image
    keep, inverse = wi.unique_items(np.zeros(0, int), np.zeros((0, 4), int))
    assert keep.size == inverse.size == 0


def test_ladder_and_batch_plan_cover_every_item_with_little_padding():
    assert wi.ladder(1024, 1) == [1024, 512, 256, 128]
    assert wi.ladder(1024, 8) == [1024, 512, 256, 128]
    assert wi.ladder(64, 8) == [64]          # small batches keep one size
    assert all(s % 3 == 0 for s in wi.ladder(1026, 3))
    for n in [0, 1, 127, 128, 129, 1023, 1024, 1025, 5653, 7365]:
        plan = wi.batch_plan(n, wi.ladder(1024, 1))
        covered = [i for p in plan for i in range(p.start, p.end)]
        assert covered == list(range(n))
        assert all(p.end - p.start <= p.size for p in plan)
        assert sum(p.size for p in plan) - n < 128  # less than the smallest size is padding
    # without the ladder a 5653-item group computes 6144 copies; with it 5760
    assert sum(p.size for p in wi.batch_plan(5653, [1024])) == 6144
    assert sum(p.size for p in wi.batch_plan(5653, wi.ladder(1024, 1))) == 5760


def _hand_drops(model, images, xy, patch):
    """Eq. 1 with no engine: every vertex's copy built in numpy and scored alone (no dedup, no batching)."""
    n, v = xy.shape[:2]
    logits = np.asarray(model.apply_fn(model.params, images))
    ex = np.exp(logits - logits.max(1, keepdims=True))
    probs = ex / ex.sum(1, keepdims=True)
    cls = probs.argmax(1)
    out = np.zeros((n, v), np.float32)
    for i in range(n):
        boxes = occ.square_bounds(xy[i], patch, (H, W))
        copies = np.repeat(images[i:i + 1], v, axis=0)
        for k, (x1, x2, y1, y2) in enumerate(boxes):
            copies[k, y1:y2, x1:x2] = 0.0
        lo = np.asarray(model.apply_fn(model.params, copies))
        e = np.exp(lo - lo.max(1, keepdims=True))
        out[i] = probs[i, cls[i]] - (e / e.sum(1, keepdims=True))[:, cls[i]]
    return out


@pytest.mark.parametrize("forward", ["dense", "incremental"])
def test_deduplicated_and_packed_drops_equal_every_copy_scored_alone(forward):
    rng = np.random.default_rng(3)
    images = rng.normal(size=(3, H, W, 3)).astype(np.float32)
    # many vertices on a coarse lattice: squares repeat within an image, as on a dense mesh
    xy = rng.integers(0, 12, (3, 300, 2)).astype(np.float32) * 2 + rng.uniform(0, 0.4, (3, 300, 2))
    model = face_model(input_size=(H, W), channels=3)
    eng = OcclusionEngine(model, batch_size=256, images_per_block=4, forward=forward, patch_size=4)
    assert eng.batch_sizes == [256, 128]
    res = eng.run(images, xy)
    counts = eng.item_counts.as_dict()
    assert counts["vertices"] == 900 and counts["unique"] < 0.6 * 900  # the lattice repeats squares
    assert counts["computed"] - counts["unique"] < 128  # packed: less than the smallest batch is padding
    np.testing.assert_allclose(res.drops, _hand_drops(model, images, xy, 4), atol=2e-6)
    assert np.abs(res.drops).max() > 1e-3
