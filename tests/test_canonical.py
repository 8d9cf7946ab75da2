"""The canonical face: mesh reading, projection, subdivision, visibility, warps.

Independent references: the canonical mesh inside the landmarker bundle
(landmark order, read by a separate path), scipy's loadmat for PRNet, and
closed-form geometry (midpoints, rotations) for subdivision and visibility.
"""
import numpy as np
import pytest
import scipy.io

from cms_jax.align import CanonicalFace, mesh_io, raster, subdivide as subdiv, visibility
from cms_jax.assets import resolve


@pytest.fixture(scope="module")
def canon(shared_dir):
    return CanonicalFace.mediapipe()


def test_counts_and_landmark_order(canon):
    assert canon.vertices.shape == (468, 2) and canon.vertices.dtype == np.float32
    assert canon.triangles.shape == (898, 3) and canon.canvas_hw == (256, 256)
    assert canon.image.shape == (256, 256, 3) and canon.image.dtype == np.uint8
    # The OBJ reordered by UVs equals the bundle's landmark-order mesh up to a shift.
    pos, tri = mesh_io.obj_in_landmark_order(resolve("canonical_face_model"), resolve("face_landmarker"))
    bpos, _, btri = mesh_io.bundle_canonical_mesh(str(resolve("face_landmarker")))
    np.testing.assert_array_equal(tri, btri)
    np.testing.assert_allclose(pos - pos.mean(0), bpos - bpos.mean(0), atol=1e-4)
    # Same triangles as the OBJ (up to winding).
    key = lambda t: set(map(lambda r: tuple(sorted(r)), t.tolist()))
    assert key(canon.triangles) == key(btri)


def test_projection_geometry(canon):
    v = canon.vertices
    assert v.min() >= 0.1 * 256 - 1e-3 and v.max() <= 0.9 * 256 + 1e-3  # 10% margins
    assert abs(v[1, 0] - 128) < 2  # nose tip (landmark 1) on the vertical midline
    assert v[10, 1] < v[1, 1] < v[152, 1]  # forehead above nose above chin: y is rows
    assert v[263, 0] > 128 > v[33, 0]  # subject's left eye on the canvas's right
    assert (visibility.signed_areas(v, canon.triangles) > 0).mean() > 0.9  # wound front-positive
    covered = (canon.image != 255).any(-1)
    assert 0.3 < covered.mean() < 0.8 and canon.image[0, 0].tolist() == [255, 255, 255]


def test_subdivision_counts_and_interpolation(canon):
    base_edges = {tuple(sorted(e)) for t in canon.triangles.tolist()
                  for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    w1, t1 = subdiv.subdivide(canon.triangles, 468, 1)
    assert w1.shape == (468 + len(base_edges), 468) == (1833, 468)
    assert t1.shape == (4 * 898, 3)
    edges1 = {tuple(sorted(e)) for t in t1.tolist()
              for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    w2, t2 = subdiv.subdivide(canon.triangles, 468, 2)
    assert w2.shape == (1833 + len(edges1), 468) and t2.shape == (16 * 898, 3)
    dense = w2.toarray()
    np.testing.assert_array_equal(dense[:468], np.eye(468))  # originals are kept exactly
    np.testing.assert_allclose(dense.sum(1), 1.0)
    # Each new level-1 vertex is the midpoint of one original edge, each edge once.
    rows = w1.tocsr()[468:]
    pairs = {tuple(sorted(rows.indices[rows.indptr[i]:rows.indptr[i + 1]].tolist()))
             for i in range(rows.shape[0])}
    assert pairs == base_edges and np.allclose(rows.data, 0.5)
    mids = (w1 @ canon.vertices.astype(np.float64))[468:]
    a, b = rows.indices[0::2], rows.indices[1::2]
    np.testing.assert_allclose(mids, (canon.vertices[a] + canon.vertices[b]) / 2.0, atol=1e-4)


def test_subdivided_face_is_consistent_with_images(canon):
    c1 = CanonicalFace.mediapipe(subdivision=1)
    assert c1.num_vertices == 1833 and c1.name == "mediapipe-sub1"
    np.testing.assert_allclose(c1.vertices[:468], canon.vertices, atol=1e-4)
    # An image mesh that is a similarity of the canonical one stays so after
    # expansion: the same W applies to image and canonical positions.
    ang, s, t = 0.3, 0.7, np.array([40.0, -12.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    img_xy = canon.vertices @ rot.T * s + t
    np.testing.assert_allclose(c1.expand(img_xy), c1.vertices @ rot.T * s + t, atol=1e-3)
    with pytest.raises(ValueError, match="expected 468"):
        c1.expand(np.zeros((10, 2)))


def _turned(canon, yaw_deg):
    """The canonical 3-D mesh turned about the vertical axis, projected to an image."""
    p = canon.pos3
    a = np.radians(yaw_deg)
    x = p[:, 0] * np.cos(a) + p[:, 2] * np.sin(a)
    z = -p[:, 0] * np.sin(a) + p[:, 2] * np.cos(a)  # toward the viewer
    return np.stack([x * 10 + 200, -p[:, 1] * 10 + 200], 1), -z * 10  # image z away


def test_visibility_on_a_turned_mesh(canon):
    xy0, z0 = _turned(canon, 0)
    assert visibility.visible_vertices(xy0, canon.triangles).mean() > 0.97
    right_side = canon.pos3[:, 0] > 3.0   # subject's left cheek (+x), far side once turned
    left_side = canon.pos3[:, 0] < -3.0
    for z in (None, "z"):
        xy, zz = _turned(canon, 70)
        vis = visibility.visible_vertices(xy, canon.triangles, None if z is None else zz)
        assert vis[right_side].mean() < 0.25, vis[right_side].mean()
        assert vis[left_side].mean() > 0.95
    # A stricter cosine hides more.
    xy, zz = _turned(canon, 40)
    loose = visibility.visible_vertices(xy, canon.triangles, zz, min_cos=0.0)
    strict = visibility.visible_vertices(xy, canon.triangles, zz, min_cos=0.5)
    assert strict.sum() < loose.sum() and not (strict & ~loose).any()


def test_identity_warp_reproduces_the_display_image(canon):
    tri_id, bary = raster.rasterize(canon.vertices, canon.triangles, canon.canvas_hw, canon.depth)
    warped, mask = raster.warp_to_canvas(canon.image, canon.vertices, tri_id, bary, canon.triangles)
    diff = np.abs(warped[mask] - canon.image[mask].astype(np.float32))
    assert mask.mean() > 0.3 and diff.mean() < 1.0
    mean_face = canon.with_mean_face([canon.image, canon.image], [canon.vertices] * 2)
    assert np.abs(mean_face.image[mask].astype(int) - canon.image[mask]).mean() < 1.0


def test_prnet_canonical_face(shared_dir):
    c = CanonicalFace.prnet(stride=20)
    mat = scipy.io.loadmat(resolve("celeba_frontal_mesh"))
    np.testing.assert_allclose(c.vertices, mat["vertices"][::20, :2], rtol=1e-6)
    assert c.num_vertices == 2194 and c.canvas_hw == (619, 619) and c.image.shape == (619, 619, 3)
    assert c.triangles.max() < 2194
    assert (visibility.signed_areas(c.vertices, c.triangles) > 0).all()  # Delaunay, re-wound
