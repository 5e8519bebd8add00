"""Bone suppression (seed 003 §3.2): a conditional GAN turns a radiograph into its bone image; the radiograph minus
it is the bone-suppressed image. Training grids, the writer of both images at the original size with a datalist
(``bone_suppressed`` for the classifier), and the evaluation (PSNR / SSIM / MAE, residual rib contrast).

The networks are :class:`cxr_monai.networks.SelfAttentionUNet` and :class:`cxr_monai.networks.MultiScaleDiscriminator`,
trained by :class:`cxr_monai.engines.PhasedAdversarialTrainer` (``bundles/bone_suppression``).

Example::

    from cxr_monai.apps.bone_suppression import BoneImageWriter

    BoneImageWriter("runs/bone/inference", datalist="nih.json", base_dir="/data/nih").attach(evaluator)
"""

from __future__ import annotations

from cxr_monai.apps.bone_suppression.evaluation import (
    BoneSuppressionEvaluation,
    BoneSuppressionReport,
    image_quality,
    rib_contrast,
)
from cxr_monai.apps.bone_suppression.outputs import (
    BoneImageWriter,
    BoneSuppressionGrid,
    figure_row,
    image_of,
    suppress_bones,
    write_png16,
)

__all__ = [
    "BoneImageWriter",
    "BoneSuppressionEvaluation",
    "BoneSuppressionGrid",
    "BoneSuppressionReport",
    "figure_row",
    "image_of",
    "image_quality",
    "rib_contrast",
    "suppress_bones",
    "write_png16",
]
