"""Lung segmentation (seed 003 §3.1: a U-Net with a VGG16 encoder): masks at the original size with overlays and a
datalist, training grids, and the evaluation at the stored size (Dice, HD95, bootstrap CIs, worst images).

The network is :class:`cxr_monai.networks.VGG16UNet`; training and inference run on MONAI's ``SupervisedTrainer``
and ``SupervisedEvaluator`` (``bundles/lung_segmentation``).

Example::

    from cxr_monai.apps.segmentation import LungMaskWriter

    LungMaskWriter("runs/seg/inference", datalist="nih.json", base_dir="/data/nih").attach(evaluator)
"""

from __future__ import annotations

from cxr_monai.apps.segmentation.evaluation import (
    SegmentationEvaluation,
    SegmentationReport,
    hd95,
    segmentation_row,
)
from cxr_monai.apps.segmentation.outputs import (
    LungMaskWriter,
    SegmentationGrid,
    dice_score,
    load_original,
    mask_of,
)

__all__ = [
    "LungMaskWriter",
    "SegmentationEvaluation",
    "SegmentationGrid",
    "SegmentationReport",
    "dice_score",
    "hd95",
    "load_original",
    "mask_of",
    "segmentation_row",
]
