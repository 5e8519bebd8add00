"""Pathology-preserving pix2pix augmentation (seed 002, Xing et al. 2019): training pairs of one annotation each, the
training grid, the writer of the synthetic set a detector trains on, an FID-style realism score (features of a
network trained here, :mod:`~cxr_monai.apps.augmentation.realism`) and the seed's Fig. 2 grid
(:mod:`~cxr_monai.apps.augmentation.figures`).

The transforms (box masks, random boxes for healthy images, ``x = y ⊙ m``, ``x̃ = x + G ⊙ (1 − m)``) are in
:mod:`cxr_monai.transforms.boxes`, the generator wrapper in :mod:`cxr_monai.networks.pathology_preserving`, the bundle
in ``bundles/pix2pix_augmentation``.

Example::

    from cxr_monai.apps.augmentation import one_entry_per_box, write_synthetic_set

    pairs = one_entry_per_box(load_datalist("boxes.json", "training"))  # one training pair per annotation
    write_synthetic_set(generator, dataset, "runs/pix2pix/synthetic", total=688, source_datalist="boxes.json")
"""

from __future__ import annotations

from cxr_monai.apps.augmentation.figures import augmentation_grid, write_augmentation_grid
from cxr_monai.apps.augmentation.pairs import Pix2PixGrid, one_entry_per_box
from cxr_monai.apps.augmentation.realism import (
    FeatureExtractor,
    RealismReport,
    evaluate_realism,
    extract_features,
    frechet_distance,
    real_baseline,
    realism_score,
)
from cxr_monai.apps.augmentation.synthetic import samples_per_box, write_synthetic_set

__all__ = [
    "FeatureExtractor",
    "Pix2PixGrid",
    "RealismReport",
    "augmentation_grid",
    "evaluate_realism",
    "extract_features",
    "frechet_distance",
    "one_entry_per_box",
    "real_baseline",
    "realism_score",
    "samples_per_box",
    "write_augmentation_grid",
    "write_synthetic_set",
]
