"""Lung masks out of a segmentation network: at the original image size, as PNG and NIfTI, with an overlay, and a
datalist that gives every image its ``lung_mask`` (seed 003 §3.1; the masks feed the context encoder and the
classifier).

The evaluator of the bundle's ``inference.json`` runs the network at the working size; its postprocessing
(``Activationsd`` → ``AsDiscreted`` → ``KeepLargestConnectedComponentd`` → ``Invertd``) brings each predicted mask
back to its image's original size, so :class:`LungMaskWriter` only writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.networks import eval_mode

from cxr_monai.handlers.per_image import DatalistWriter
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


class LungMaskWriter(DatalistWriter):
    """Write each predicted lung mask of an evaluator's output at the original image size, and a datalist.

    Per image (``<stem>`` = the file name without its image suffix, :func:`~cxr_monai.engines.output_stem`):
    ``masks/<stem>.png`` (0/255, the image's size), ``masks/<stem>.nii.gz`` (uint8, nibabel; axes x = column,
    y = row, the affine holds the pixel spacing when the file has one), ``overlays/<stem>.png`` (the radiograph with
    the mask's outline). When the run completes, ``datalist.json`` in ``output_dir`` lists every image with its
    ``lung_mask`` (:class:`~cxr_monai.handlers.DatalistWriter`: an image of ``datalist`` keeps its split and other
    keys, so a ChestX-ray14 list without masks becomes one with model masks for the context encoder; the
    heuristic's ``lung_boxes`` are dropped, the mask replaces them).

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
        super().__init__(output_dir, datalist, datalist_keys, base_dir, image_key=image_key, split=split,
                         name=f"{name} predicted by the lung-segmentation bundle", drop_keys=("lung_boxes",))
        self.pred_key = pred_key
        self.mask_key = mask_key
        self.write_nifti = write_nifti
        self.write_overlay = write_overlay

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
        stem = self.stem(image_path)
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
        return self.record(image_path, {self.mask_key: png})


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
