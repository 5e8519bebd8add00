"""Detection inference (the localisation bundle's ``inference.json``): a trained Faster R-CNN on any list of
radiographs, no ground truth needed, its boxes written as a CSV in the pixels of the stored images and drawn on them.

- :func:`boxes_to_stored_pixels`: boxes on the network input (the image after the preprocessing's resize) back in
  the pixels of the image file, by undoing each resize the image's MONAI trace records.
- :class:`DetectionInference`: the runner: ``detections.csv`` and one overlay PNG per image.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks import eval_mode
from monai.utils import TraceKeys

from cxr_monai.apps.localisation.handlers import detection_overlay
from cxr_monai.apps.localisation.report import SEED_CLASSES, predicted_detections
from cxr_monai.data.robust import SkipLog
from cxr_monai.engines.images import PreprocessedImage, iterate_images
from cxr_monai.transforms import as_box_array, scale_boxes
from cxr_monai.utils import as_bool
from cxr_monai.visualize import save_png

__all__ = ["DETECTION_FIELDS", "DetectionInference", "boxes_to_stored_pixels"]

logger = logging.getLogger(__name__)

#: The columns of ``detections.csv``: one row per kept box, boxes ``[x_min, y_min, x_max, y_max]`` in stored pixels.
DETECTION_FIELDS = ("image", "class", "score", "x_min", "y_min", "x_max", "y_max")

_RESIZES = ("Resize", "Resized", "ResizeWithBoxes", "ResizeWithBoxesd")


def boxes_to_stored_pixels(boxes: Any, image: Any) -> np.ndarray:
    """``[x_min, y_min, x_max, y_max]`` boxes on a preprocessed ``(C, H, W)`` image, in the pixels of the stored
    image it was read from: each resize in the image's MONAI trace (``applied_operations``: MONAI ``Resize`` /
    ``Resized``, hence :class:`~cxr_monai.transforms.ResizeWithBoxesd`) is undone, the last first, and the boxes
    are clipped to the stored size. A traced transform of another kind (a crop, a pad) is an error naming it: its
    inverse is not a scaling. An image without a trace (a plain tensor, or no resize) keeps its boxes.

    >>> from cxr_monai.transforms import ResizeWithBoxesd
    >>> image = ResizeWithBoxesd("image", 64, box_keys=())({"image": MetaTensor(torch.zeros(1, 100, 200))})["image"]
    >>> boxes_to_stored_pixels([[16, 32, 32, 64]], image).tolist()
    [[50.0, 50.0, 100.0, 100.0]]
    """
    return _undo_resizes(boxes, image)[0]


def _undo_resizes(boxes: Any, image: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`boxes_to_stored_pixels` and the stored image's ``(H, W)``."""
    array = as_box_array(boxes).copy()  # clipped in place below
    shape = tuple(int(s) for s in image.shape[-2:])
    for operation in reversed(list(getattr(image, "applied_operations", None) or [])):
        name = operation.get(TraceKeys.CLASS_NAME)
        if name not in _RESIZES or TraceKeys.ORIG_SIZE not in operation:
            source = getattr(image, "meta", {}).get("filename_or_obj", "the image")
            raise ValueError(f"{source}: the preprocessing applied {name}, which boxes cannot be mapped back through "
                             "to the stored image's pixels; detection inference takes a load and a resize only")
        original = tuple(int(s) for s in operation[TraceKeys.ORIG_SIZE])[-2:]
        if len(array):
            array = scale_boxes(array, shape, original)
        shape = original
    if len(array):
        array[:, [0, 2]] = np.clip(array[:, [0, 2]], 0, shape[1])
        array[:, [1, 3]] = np.clip(array[:, [1, 3]], 0, shape[0])
    return array, shape


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


class DetectionInference:
    """Runner of the localisation bundle's ``inference.json``: a detector's boxes for every datalist entry.

    Each of the first ``max_images`` entries of ``datalist`` (boxes or labels, if any, are not read) goes through
    ``preprocessing`` (load, resize to the network's ``image_size``: ``image`` ``(1, H, W)`` in [0, 1], a MetaTensor
    whose trace records the resize; optionally ``original_key``: the image as loaded, for the overlay), then the
    detector, ``batch_size`` images at a time, in eval mode (autocast on CUDA with ``amp``). Of its boxes, per class
    the ``top_k`` highest-scoring ones with score >= ``score_threshold`` are kept (the rule the CL evaluation
    counts, :func:`~cxr_monai.apps.localisation.predicted_detections`; ``top_k`` 0 or ``None``: all). In
    ``output_dir``:

    - ``detections.csv``: columns ``image, class, score, x_min, y_min, x_max, y_max``, one row per kept box, an
      image's rows highest score first; boxes in the pixels of the *stored* image (:func:`boxes_to_stored_pixels`);
    - ``overlays/<stem>.png``: every processed image with its kept boxes in magenta and ``class score`` of each in
      the corner, on the stored image when the preprocessing keeps it under ``original_key`` (else on the network
      input, with the boxes in its pixels). An image without a box above the threshold has no CSV row, still an
      overlay ("no detection ..."), and the log says so.

    An image that cannot be read is skipped: a warning names the file and the reason, and ``skipped.csv``
    (``stage, image, reason``) lists it; the run stops with :class:`~cxr_monai.data.robust.TooManySkippedError`
    only when more than ``max_skipped_fraction`` of the images are skipped.

    Example::

        runner = DetectionInference(network, load_datalist("screen.json", "test"), preprocessing,
                                    "runs/localisation/inference", class_names=["Effusion", "Nodule"])
        detections_csv = runner.run()
    """

    def __init__(
        self,
        network: torch.nn.Module | Callable[[list[torch.Tensor]], list[Mapping[str, torch.Tensor]]],
        datalist: Sequence[Mapping[str, Any]],
        preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = SEED_CLASSES,
        top_k: int | None = 1,
        score_threshold: float = 0.05,
        device: torch.device | str | None = None,
        amp: bool | str = False,
        amp_dtype: torch.dtype | str = torch.float16,
        batch_size: int = 1,
        max_images: int | None = None,
        overlays: bool | str = True,
        image_key: str = "image",
        original_key: str | None = "original",
        max_skipped_fraction: float = 0.05,
    ) -> None:
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device) if isinstance(network, torch.nn.Module) else network
        self.datalist = datalist
        self.preprocessing = preprocessing
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        if not self.class_names:
            raise ValueError("class_names: the detector's classes, in label order, are needed to name its boxes")
        self.top_k = None if top_k is None or int(top_k) <= 0 else int(top_k)
        self.score_threshold = float(score_threshold)
        self.amp = as_bool(amp, "amp")
        self.amp_dtype = getattr(torch, amp_dtype) if isinstance(amp_dtype, str) else amp_dtype
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive number of images, got {batch_size}")
        self.batch_size = int(batch_size)
        self.max_images = max_images
        self.overlays = as_bool(overlays, "overlays")
        self.image_key, self.original_key = image_key, original_key
        self.max_skipped_fraction = float(max_skipped_fraction)
        self.skip_log: SkipLog | None = None
        self.counts = {"images": 0, "with_detections": 0, "boxes": 0}

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "detections.csv"

    def run(self) -> Path:
        """Process the datalist; returns the path of ``detections.csv``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.skip_log = SkipLog(self.output_dir / "skipped.csv", self.max_skipped_fraction)
        self.counts = {"images": 0, "with_detections": 0, "boxes": 0}
        with open(self.csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=DETECTION_FIELDS)
            writer.writeheader()
            batch: list[PreprocessedImage] = []
            for item in iterate_images(self.datalist, self.preprocessing, max_images=self.max_images,
                                       image_key=self.image_key, skip_log=self.skip_log, stage="inference"):
                batch.append(item)
                if len(batch) == self.batch_size:
                    writer.writerows(self._detect(batch))
                    handle.flush()
                    batch = []
            if batch:
                writer.writerows(self._detect(batch))
        counts = self.counts
        logger.info("detections of %d images in %s: %d boxes (top_k %s per class, score >= %g), %d images without "
                    "one%s", counts["images"], self.csv_path, counts["boxes"], self.top_k or "all", self.score_threshold,
                    counts["images"] - counts["with_detections"],
                    f"; overlays in {self.output_dir / 'overlays'}" if self.overlays else "")
        if self.skip_log.count():
            logger.warning("%d images skipped, listed in %s", self.skip_log.count(), self.skip_log.path)
        return self.csv_path

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _predict(self, images: list[torch.Tensor]) -> list[Mapping[str, torch.Tensor]]:
        inputs = [_plain(image).float().to(self.device) for image in images]
        if isinstance(self.network, torch.nn.Module):
            with eval_mode(self.network), self._autocast():
                return self.network(inputs)
        with torch.no_grad(), self._autocast():
            return self.network(inputs)

    def _detect(self, batch: Sequence[PreprocessedImage]) -> list[dict[str, Any]]:
        found = self._predict([item.data[self.image_key] for item in batch])
        rows = []
        for item, detection in zip(batch, found):
            rows += self._write(item, {key: value.detach().float().cpu() if value.is_floating_point() else value.cpu()
                                       for key, value in detection.items()})
        return rows

    def _write(self, item: PreprocessedImage, detection: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        image = item.data[self.image_key]
        path = str(self.datalist[item.index][self.image_key])
        kept = [(name, box, score) for label, name in enumerate(self.class_names, start=1)
                for box, score in predicted_detections(detection, label, self.top_k, self.score_threshold)]
        kept.sort(key=lambda entry: -entry[2])
        working = [box for _, box, _ in kept]
        stored, stored_shape = _undo_resizes(working, image)  # also checks the preprocessing of an image without box
        rows = [{"image": path, "class": name, "score": f"{score:.4f}",
                 **{key: f"{value:.1f}" for key, value in zip(DETECTION_FIELDS[3:], box.tolist())}}
                for (name, _, score), box in zip(kept, stored)]
        self.counts["images"] += 1
        self.counts["boxes"] += len(rows)
        self.counts["with_detections"] += bool(rows)
        if self.overlays:
            self._draw(item, image, working, stored, stored_shape, kept)
        if rows:
            logger.info("inference %d: %s: %s", self.counts["images"], path,
                        ", ".join(f"{name} {score:.2f}" for name, _, score in kept))
        else:
            logger.info("inference %d: %s: no detection with score >= %g (no CSV row; overlay only)",
                        self.counts["images"], path, self.score_threshold)
        return rows

    def _draw(self, item: PreprocessedImage, image: Any, working: list, stored: np.ndarray,
              stored_shape: tuple[int, int], kept: list) -> None:
        original = item.data.get(self.original_key) if self.original_key else None
        if original is not None:
            canvas, boxes = _plain(original), stored.tolist()
            if tuple(canvas.shape[-2:]) != stored_shape:
                raise ValueError(f"{self.datalist[item.index][self.image_key]}: '{self.original_key}' has shape "
                                 f"{tuple(canvas.shape[-2:])}, not {stored_shape}, the size the resize started "
                                 "from; copy the image as loaded, before any spatial transform")
        else:
            canvas, boxes = _plain(image), working
        text = (", ".join(f"{name} {score:.2f}" for name, _, score in kept) if kept
                else f"no detection with score >= {self.score_threshold:g}")
        save_png(detection_overlay(canvas[0], boxes, text=text), self.output_dir / "overlays" / f"{item.stem}.png")
