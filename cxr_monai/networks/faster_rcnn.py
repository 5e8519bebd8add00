"""Faster R-CNN (ResNet FPN, torchvision) for grey chest radiographs: seed 002's disease localisation model.

The seed uses a Faster R-CNN on Inception-ResNet-v2 (TensorFlow's detection zoo); this is torchvision's
``fasterrcnn_resnet50_fpn`` (Ren et al. 2015 with a feature pyramid), built without downloading anything
(``weights=None, weights_backbone=None``) for ``len(class_names) + 1`` classes (index 0 is the background) and one
fixed input size (``min_size = max_size = image_size``: the square radiographs are neither up- nor down-scaled
inside the detector).

**Grey input.** The detector takes a list of ``(1, H, W)`` radiographs in [0, 1] (``(3, H, W)`` RGB also works);
its input transform (:class:`GreyRCNNTransform`) repeats a grey image to three channels before torchvision's
ImageNet normalisation, so the RGB ``conv1`` of torchvision's COCO and ImageNet weights sees the radiograph as
those weights saw a grey photograph, with no kernel adaptation (the cost: one 7x7 convolution over 3 channels
instead of 1).

**Weights** come only from a user's file (``pretrained_path``, read with ``torch.load(weights_only=True)``):
torchvision's COCO detector state dict (``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``: everything but the
91-class box predictor, which is skipped for its shape and named in the log) or an ImageNet ResNet-50
(``resnet50-0676ba61.pth``: its keys go to ``backbone.body.``, ``fc`` is unused). Batch norm stays as
``fasterrcnn_resnet50_fpn`` builds it without weights (trainable ``BatchNorm2d``, all backbone layers trainable);
with batch 2 (the seed's) its statistics are noisy, which a frozen-BN recipe on COCO weights would avoid.

torchvision is optional (the ``detection`` extra); importing this module without a working torchvision raises the
ImportError of :func:`~cxr_monai.utils.require_torchvision`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cxr_monai.networks.pretrained import load_matching_tensors, read_state_dict
from cxr_monai.utils import require_torchvision

require_torchvision()

from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

__all__ = ["BACKBONES", "GreyRCNNTransform", "faster_rcnn_fpn", "load_faster_rcnn_pretrained"]

#: the ResNets a detector can be built on (torchvision's seed-like default: resnet50)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")

logger = logging.getLogger(__name__)


class GreyRCNNTransform(GeneralizedRCNNTransform):
    """torchvision's detector input transform (normalise, resize, batch) that first repeats a one-channel image to
    the three channels of its ImageNet mean and std.

    >>> transform = GreyRCNNTransform(64, 64, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    >>> transform.normalize(torch.zeros(1, 8, 8)).shape
    torch.Size([3, 8, 8])
    """

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return super().normalize(image)


def faster_rcnn_fpn(
    class_names: Sequence[str],
    image_size: int = 256,
    backbone: str = "resnet50",
    representation_size: int = 1024,
    pretrained_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision's Faster R-CNN with a ResNet FPN backbone for ``class_names`` (labels 1..n; 0 is the background)
    on grey ``image_size`` px radiographs, randomly initialised or from a user's ``pretrained_path``
    (:func:`load_faster_rcnn_pretrained`).

    The default (``backbone="resnet50"``, ``representation_size=1024``) is exactly
    ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(class_names) + 1,
    min_size=image_size, max_size=image_size)``, whose state dict torchvision's COCO weights fit. A lighter
    detector for CPU tests and benchmarks: ``backbone`` ``"resnet18"`` or ``"resnet34"`` (the same FPN on
    torchvision's ResNet, BatchNorm trainable as above) and a smaller box head (``representation_size``: the width
    of the two fully connected layers after RoI pooling, torchvision's 1024). ``kwargs`` go to torchvision's
    ``FasterRCNN`` (e.g. ``box_score_thresh``, ``box_detections_per_img``, ``box_batch_size_per_image``).

    In training mode the model takes ``(images, targets)`` and returns torchvision's loss dict; in eval mode
    ``images`` and returns one ``{"boxes", "labels", "scores"}`` per image, boxes ``[x_min, y_min, x_max, y_max]``
    in the input's pixels.

    >>> model = faster_rcnn_fpn(["Effusion", "Pneumothorax"], 64, "resnet18", representation_size=64).eval()
    >>> sorted(model([torch.rand(1, 64, 64)])[0])
    ['boxes', 'labels', 'scores']
    """
    names = list(class_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct names, one per class, got {names}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    size, width = int(image_size), int(representation_size)
    if backbone == "resnet50" and width == 1024:
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(names) + 1,
                                        min_size=size, max_size=size, **kwargs)
    else:
        features = resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=torch.nn.BatchNorm2d,
                                       trainable_layers=5)
        resolution = 7  # torchvision's MultiScaleRoIAlign output size
        model = FasterRCNN(features, min_size=size, max_size=size,
                           box_head=TwoMLPHead(features.out_channels * resolution**2, width),
                           box_predictor=FastRCNNPredictor(width, len(names) + 1), **kwargs)
    old = model.transform
    model.transform = GreyRCNNTransform(old.min_size, old.max_size, old.image_mean, old.image_std,
                                        size_divisible=old.size_divisible, fixed_size=old.fixed_size,
                                        _skip_resize=old._skip_resize)
    if pretrained_path:
        load_faster_rcnn_pretrained(model, pretrained_path)
    return model


def load_faster_rcnn_pretrained(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Copy the tensors of a user's weights file into a torchvision Faster R-CNN; never downloads.

    Key layouts: torchvision's detector (``backbone.``, ``rpn.``, ``roi_heads.``: the COCO weights) as they are;
    a plain ResNet-50 (``conv1``, ``layer1``... the ImageNet classifier) under ``backbone.body.``. Tensors whose
    shape differs (the COCO box predictor's 91 classes) are skipped and named at WARNING, network tensors the file
    lacks (the FPN and heads, for ImageNet weights) too, unused file keys at INFO
    (:func:`~cxr_monai.networks.pretrained.load_matching_tensors`). Returns that function's summary.
    """
    path = Path(path)
    tensors = read_state_dict(path, "Faster R-CNN weights")
    detector_layout = any(key.startswith(("backbone.", "rpn.", "roi_heads.")) for key in tensors)
    source = {(key if detector_layout else f"backbone.body.{key}"): (key, value) for key, value in tensors.items()}
    return load_matching_tensors(model, path, source, source, what="Faster R-CNN", log=logger)
