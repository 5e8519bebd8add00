"""Observer studies (seeds 001 and 002): people judge whether generated images pass as real.

Two designs, one study folder each, made by ``python -m cxr_monai study create``:

- ``2afc`` (seed 001 §4.3): each trial shows two images side by side, an original and its copy with the centre
  inpainted by the context encoder; the reader picks the original. The side of the original is drawn per reader
  and per showing. 50 % correct is chance: the inpainting cannot be told from real tissue.
- ``real_or_synthetic`` (seed 002 §3.1, Table 1): each trial shows one image, real or made by a generator
  (pix2pix exports); the reader calls it real or synthetic. The report counts the images called real per source.

A study folder::

    study.json      the manifest: design, seed, repeats, trials (never served)
    images/         the trials' images as 16-bit grey PNGs with opaque names (pixel data only: no DICOM field)
    key.csv         trial -> the files it was made from, for the researcher (never served)
    admin_token     the admin page's token (mode 0600)
    secret_key      signs the readers' session cookies (mode 0600)
    study.db        the answers, when the default SQLite database is used

``study serve`` runs the web app (:mod:`cxr_monai.apps.study.app`) on it, every answer committed as it is given
(:mod:`cxr_monai.apps.study.store`); ``study report`` writes the per-reader and pooled tables
(:mod:`cxr_monai.apps.study.report`) and logs them to MLflow.
"""
