"""Which images drive each region: vertex membership, per-image region saliency, the top-k choice."""
import numpy as np

from cms_jax import regions


def _canon_and_masks():
    from cms_jax.align import CanonicalFace
    canon = CanonicalFace.mediapipe(canvas=128)
    return canon, regions.region_masks(canon.vertices, canon.canvas_hw)


def test_every_vertex_lies_in_exactly_one_region():
    canon, masks = _canon_and_masks()
    member = regions.vertex_regions(canon.vertices, masks)
    assert member.shape == (468, len(regions.REGIONS)) and (member.sum(1) == 1).all()
    names = list(masks)
    eyes = member[:, names.index("eyes")]
    assert eyes[[33, 263, 133, 362]].all()  # the eye corners of MediaPipe's mesh
    assert member[1, names.index("nose")]   # the nose tip


def test_top_images_match_a_brute_force_ranking():
    canon, masks = _canon_and_masks()
    rng = np.random.default_rng(3)
    n, v = 40, 468
    drops = rng.normal(0.0, 0.01, (n, v)).astype(np.float32)
    valid = rng.random((n, v)) > 0.2
    names = list(masks)
    eye = regions.vertex_regions(canon.vertices, masks)[:, names.index("eyes")]
    drops[7, eye] += 0.2   # image 7 puts the most on the eyes, then image 19
    drops[19, eye] += 0.1
    drops[5] = -np.abs(drops[5])  # nothing positive anywhere: never picked
    got = regions.top_images(regions.image_region_saliency(drops, valid, regions.vertex_regions(canon.vertices, masks),
                                                           batch=16), k=6)
    # Brute force: per region, per image, loop over the vertices and read the mask at the vertex's pixel.
    for r, name in enumerate(names):
        members = [j for j in range(v) if masks[name][int(canon.vertices[j, 1]), int(canon.vertices[j, 0])]]
        score = []
        for i in range(n):
            tot = sum(max(float(drops[i, j]), 0.0) for j in members if valid[i, j])
            score.append(tot / len(members) if members else 0.0)
        want = sorted((i for i in range(n) if score[i] > 0), key=lambda i: (-score[i], i))[:6]
        assert list(got[r]) == want, name
        assert 5 not in want
    assert list(got[names.index("eyes")][:2]) == [7, 19]
