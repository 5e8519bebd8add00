"""Lung masks out of a segmentation network: at the original image size, as PNG and NIfTI, with an overlay, and a
datalist that gives every image its ``lung_mask`` (seed 003 §3.1; the masks feed the context encoder and the
classifier).

The evaluator of the bundle's ``inference.json`` runs the network at the working size; its postprocessing
(``Activationsd`` → ``AsDiscreted`` → ``KeepLargestConnectedComponentd`` → ``Invertd``) brings each predicted mask
back to its image's original size, so :class:`LungMaskWriter` only writes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.networks import eval_mode

from cxr_monai.engines.images import unique_output_stem
from cxr_monai.handlers.per_image import PerImageHandler
from cxr_monai.utils import is_rank0
from cxr_monai.visualize import labelled_row, mask_overlay, save_png, stack_rows

__all__ = ["LungMaskWriter", "SegmentationGrid", "dice_score", "load_original", "mask_of"]

logger = logging.getLogger(__name__)


def mask_of(value: Any) -> np.ndarray:
    """``(H, W)`` bool of a ``(1, H, W)`` / ``(H, W)`` mask or probability map (foreground: above 0.5)."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"expected a single-channel 2-D mask, got shape {tuple(np.shape(value))}")
    return array > 0.5


def dice_score(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty.

    >>> dice_score(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
    0.6666666666666666
    """
    total = int(prediction.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def load_original(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The radiograph at its stored size, ``(H, W)`` in [0, 1] with lungs dark, and its meta (the project reader)."""
    from cxr_monai.io import read_cxr

    return read_cxr(path)


def _spacing(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    spacing = meta.get("pixel_spacing")
    if spacing is None:
        return None
    row, column = (float(v) for v in spacing)
    return row, column


class LungMaskWriter(PerImageHandler):
    """Write each predicted lung mask of an evaluator's output at the original image size, and a datalist.

    Per image (``<stem>`` = the file name without its image suffix, :func:`~cxr_monai.engines.output_stem`):
    ``masks/<stem>.png`` (0/255, the image's size), ``masks/<stem>.nii.gz`` (uint8, nibabel; axes x = column,
    y = row, the affine holds the pixel spacing when the file has one), ``overlays/<stem>.png`` (the radiograph with
    the mask's outline). When the run completes, ``datalist.json`` in ``output_dir`` lists every image with its
    ``lung_mask`` (image and other paths absolute, mask paths relative to ``output_dir``: load it with
    ``base_dir=output_dir``). An image of ``datalist`` (the file the evaluator's list came from, read with
    ``base_dir``) keeps its split among ``datalist_keys`` and its other keys, so a ChestX-ray14 list without masks
    becomes one with model masks for the context encoder; other images go under ``split``.

    Example::

        LungMaskWriter("runs/seg/inference", datalist="nih.json", base_dir="/data/nih").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        datalist: str | os.PathLike | None = None,
        datalist_keys: Sequence[str] = ("test", "test_unhealthy"),
        base_dir: str | os.PathLike | None = None,
        pred_key: str = "pred",
        image_key: str = "image",
        mask_key: str = "lung_mask",
        split: str = "test",
        write_nifti: bool = True,
        write_overlay: bool = True,
        name: str = "lung masks",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self.splits: list[str] = []  # the source's splits among datalist_keys, kept even when empty
        if datalist is not None:
            from cxr_monai.data import load_datalist, validate_datalist

            present = validate_datalist(datalist)  # a broken file fails here, naming itself
            self.splits = [key for key in datalist_keys if key in present]
            for key in self.splits:
                for entry in load_datalist(datalist, key, base_dir=base_dir):
                    self.entries[os.path.abspath(entry[image_key])] = (key, entry)
        self.pred_key = pred_key
        self.image_key = image_key
        self.mask_key = mask_key
        self.split = split
        self.write_nifti = write_nifti
        self.write_overlay = write_overlay
        self.name = name
        self.written: list[tuple[str, dict[str, Any]]] = []
        self._stems: set[str] = set()

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        self.write(item[self.pred_key], image_path)

    def write(self, prediction: Any, image_path: str | None) -> dict[str, Any]:
        """Write the files of one mask; returns its datalist entry."""
        if image_path is None:
            raise ValueError("LungMaskWriter: the prediction carries no file name (MetaTensor meta "
                             "'filename_or_obj'); load images with cxr_monai.io.LoadCXRImaged")
        mask = mask_of(prediction)
        image, meta = load_original(image_path)
        if image.shape != mask.shape:
            raise ValueError(f"{image_path}: the mask is {mask.shape} but the image {image.shape}; the inference "
                             "postprocessing must invert the resize (Invertd)")
        stem = unique_output_stem(image_path, self._stems)
        png = self.output_dir / "masks" / f"{stem}.png"
        save_png(mask.astype(np.uint8) * 255, png)
        if self.write_nifti:
            import nibabel as nib

            spacing = _spacing(meta) or (1.0, 1.0)
            affine = np.diag([spacing[1], spacing[0], 1.0, 1.0])
            nib.save(nib.Nifti1Image(mask.T[:, :, None].astype(np.uint8), affine),
                     self.output_dir / "masks" / f"{stem}.nii.gz")
        if self.write_overlay:
            save_png(mask_overlay(image, [mask], fill=0.2), self.output_dir / "overlays" / f"{stem}.png")
        absolute = os.path.abspath(image_path)
        split, source = self.entries.get(absolute, (self.split, {}))
        from cxr_monai.data.datalist import PATH_KEYS

        # the list is read from output_dir: every other path of the source entry must not depend on the cwd
        entry = {key: os.path.abspath(value) if key in PATH_KEYS and isinstance(value, str) else value
                 for key, value in source.items()}
        entry.update({self.image_key: absolute, self.mask_key: png.relative_to(self.output_dir).as_posix()})
        entry.pop("lung_boxes", None)  # boxes of the heuristic; the mask replaces them
        self.written.append((split, entry))
        return entry

    def completed(self, engine: Engine | None = None) -> Path | None:
        """Write ``datalist.json`` (rank 0 only)."""
        if not is_rank0() or not self.written:
            return None
        path = self.output_dir / "datalist.json"
        document: dict[str, Any] = {"name": self.name, "description": "lung masks predicted by the lung-segmentation "
                                    "bundle; image paths absolute, mask paths relative to this file's folder"}
        for split in self.splits:  # an empty split stays a list: readers such as the context encoder expect it
            document[split] = []
        for split, entry in self.written:
            document.setdefault(split, []).append(entry)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %d lung masks and %s", len(self.written), path)
        return path


class SegmentationGrid:
    """The grid :class:`~cxr_monai.handlers.ImageGridSaver` writes for a lung segmentation: one row per image,
    the radiograph and the prediction (red) over the reference mask (green), the row labelled with its Dice.

    Example::

        ImageGridSaver(val_dataset, "runs/seg/grids", grid=SegmentationGrid(network)).attach(trainer)
    """

    def __init__(self, network: torch.nn.Module, image_key: str = "image", label_key: str = "lung_mask") -> None:
        self.network = network
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        network = getattr(self.network, "module", self.network)
        device = next(network.parameters()).device
        images = torch.stack([torch.as_tensor(sample[self.image_key]).float() for sample in samples]).to(device)
        with eval_mode(network), torch.no_grad():
            predictions = torch.sigmoid(network(images)).cpu()
        rows = []
        for sample, image, prediction in zip(samples, images.cpu(), predictions):
            predicted = mask_of(prediction)
            masks, label = [predicted], "prediction"
            if self.label_key in sample:
                reference = mask_of(torch.as_tensor(sample[self.label_key]))
                masks.append(reference)
                label = f"Dice {dice_score(predicted, reference):.3f}"
            grey = image[0].numpy()
            rows.append(labelled_row([np.repeat((grey[..., None] * 255).astype(np.uint8), 3, -1),
                                      mask_overlay(grey, masks)], label))
        return stack_rows(rows)
