"""Ground-truth boxes as a torchvision detector's training target (seed 002's Faster R-CNN).

Our boxes are ``[x_min, y_min, x_max, y_max]`` in pixels (x = column, max exclusive; docs/data_contract.md), the
order and continuous-coordinate convention of torchvision's detection models: a box of pixel columns 3..5 is
``x_min=3, x_max=6`` in both, so the coordinates pass unchanged. (MONAI's detection box transforms order
coordinates by array axis instead and are not used here.)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from cxr_monai.transforms.utils import as_box_array, source_name

__all__ = ["DetectionTargets", "DetectionTargetsD", "DetectionTargetsDict", "DetectionTargetsd"]

logger = logging.getLogger(__name__)


class DetectionTargets(Transform):
    """``(boxes, box_labels)`` -> torchvision's target ``{"boxes": float32 (N, 4), "labels": int64 (N,)}``.

    A box's label is its class's index in ``class_names`` plus one (0 is torchvision's background). Boxes whose
    label is not one of ``class_names`` are dropped; an image left with no box gives an empty target, which
    torchvision trains as background only (every proposal negative). A box without area, non-finite values or a
    label count that differs from the box count is an error naming the image
    (:func:`~cxr_monai.transforms.as_box_array`).

    Args:
        class_names: the detector's classes, in label order.
        source: names the image in error messages.

    >>> target = DetectionTargets(["Effusion", "Pneumothorax"])([[0, 0, 8, 8], [2, 2, 6, 9]], ["Pneumothorax", "Mass"])
    >>> target["boxes"].tolist(), target["labels"].tolist()
    ([[0.0, 0.0, 8.0, 8.0]], [2])
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        names = list(class_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"class_names must be distinct names, one per class, got {names}")
        self.class_names = names
        self.index = {name: i + 1 for i, name in enumerate(names)}

    def __call__(self, boxes: Any, box_labels: Sequence[str] | None, source: str = "image") -> dict[str, torch.Tensor]:
        array = np.zeros((0, 4), np.float32) if boxes is None else as_box_array(boxes, source)
        labels = [] if box_labels is None else [str(label) for label in box_labels]
        if len(labels) != len(array):
            raise ValueError(f"{source}: {len(array)} boxes but {len(labels)} box_labels; one label per box")
        keep = [i for i, label in enumerate(labels) if label in self.index]
        if len(keep) < len(labels):
            logger.debug("%s: %d of %d boxes dropped (class not in class_names)", source,
                         len(labels) - len(keep), len(labels))
        return {"boxes": torch.as_tensor(array[keep], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor([self.index[labels[i]] for i in keep], dtype=torch.int64)}


class DetectionTargetsd(MapTransform):
    """Dictionary version of :class:`DetectionTargets`: ``data[box_key]`` and ``data[label_key]`` (in pixels of the
    network input, i.e. after :class:`~cxr_monai.transforms.ResizeWithBoxesd`) become ``data[target_key]``; an
    entry without boxes gets an empty target. The source keys are kept.

    >>> out = DetectionTargetsd(["Effusion"])({"image": torch.zeros(1, 8, 8), "boxes": [[1, 1, 4, 4]],
    ...                                        "box_labels": ["Effusion"]})
    >>> out["targets"]["labels"].tolist()
    [1]
    """

    def __init__(
        self,
        class_names: Sequence[str],
        box_key: str = "boxes",
        label_key: str = "box_labels",
        target_key: str = "targets",
        image_key: KeysCollection = "image",
    ) -> None:
        super().__init__(image_key, allow_missing_keys=True)
        self.converter = DetectionTargets(class_names)
        self.box_key, self.label_key, self.target_key = box_key, label_key, target_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key = next(iter(self.keys))
        source = source_name(d.get(image_key), d, image_key) if image_key in d else "entry"
        d[self.target_key] = self.converter(d.get(self.box_key), d.get(self.label_key), source)
        return d


DetectionTargetsD = DetectionTargetsDict = DetectionTargetsd
