"""Ignite engines and what they share: the phased adversarial trainer of every GAN and its schedule, the
detection trainer and evaluator (torchvision detectors), ``prepare_batch`` by key, the per-image iteration of
runners.

Example::

    from cxr_monai.engines import GanSchedule

    GanSchedule(g_l2_epochs=2, d_only_epochs=4, g_every=2).phase(epoch=3)  # GanPhase.D_ONLY
"""

from __future__ import annotations

from cxr_monai.engines.adversarial import (
    PhasedAdversarialTrainer,
    conditional_pair,
    loss_terms,
)
from cxr_monai.engines.detection import (
    DetectionBatch,
    DetectionEvaluator,
    DetectionTrainer,
    detection_collate,
)
from cxr_monai.engines.gan_schedule import GanPhase, GanSchedule
from cxr_monai.engines.images import (
    PreprocessedImage,
    iterate_images,
    output_stem,
    stack_patches,
    unique_output_stem,
)
from cxr_monai.engines.prepare_batch import KeyedBatch

__all__ = [
    "DetectionBatch",
    "DetectionEvaluator",
    "DetectionTrainer",
    "GanPhase",
    "GanSchedule",
    "KeyedBatch",
    "PhasedAdversarialTrainer",
    "PreprocessedImage",
    "conditional_pair",
    "detection_collate",
    "iterate_images",
    "loss_terms",
    "output_stem",
    "stack_patches",
    "unique_output_stem",
]
