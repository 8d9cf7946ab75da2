"""Maps for people: colour scales with units, readable panels, smooth renderings, face thumbnails.

A map is a rendering of a per-vertex vector (STYLE.md); nothing here changes a
number of Eqs. 4-6. ``cms.npy`` stays the exact square splat; these modules
only decide how it, its groups and single CIS maps look in ``cms.png`` and
``report.html``:

* `colours`: `Scale` (sequential, or diverging centred at zero when a map has
  negative values), the colour tables, and the unit of a run's scores.
* `panel`: a map over a face with region outlines and a colour bar inset.
* `smooth`: vertex values interpolated over the mesh triangles (display only).
* `faces`: the photos behind a region (per-image CIS reprojected, Fig. 6d).
"""
