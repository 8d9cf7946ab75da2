"""The paper's figures as library functions (behind the thin ``experiments/figNN_*.py`` scripts).

  tasks.figure          Fig. 1   CMS of each face-task model side by side
  density.figure        Fig. 4   CIS with and without count normalisation (Eq. 5)
  num_images.figure     Fig. 5   CMS of n images against the whole-set CMS (Eq. 6)
  maps.figure           Fig. 6   occlusion map, CIS, CMS, CMS reprojected onto the input
  sanity.figure         Fig. 7   cascading layer randomisation (Adebayo et al.)
  metrics_table.run     Figs. 9-10  Average Drop, Increase, Win of CAMs and the CMS (Eqs. 7-11)
  individual.figure     Fig. 14  individual occlusion maps beside the CMS
  pairs.figure          Fig. 15  confidences on pairs of images
  makeup.run            Fig. 15  digital eye make-up against the same paint on the cheeks
  patch_size.figure     Fig. 16  CIS of one image for several patch sizes

Every function writes a PNG and a JSON into its ``out_dir`` and returns the JSON's dict.
Maps are computed with the pipeline (`cms_jax.pipeline.run_job`, whose ``drops.npz`` is reused
without rescoring) or, per image, with `per_image.FaceMaps` (the pipeline's preparer, geometry and engine).
"""

import matplotlib

matplotlib.use("Agg")  # figures are files: never open a window, whatever the environment says
