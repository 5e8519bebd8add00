"""ClaSegNet's localisation maps at the radiograph's stored size, and SIIM-ACR's submission file.

Per image (:class:`PneumothoraxWriter`): ``probability/<stem>.png`` the region probability map (the seed's
localisation map: each region's p_ij, upsampled bilinearly; 8-bit, 255 = 1), ``masks/<stem>.png`` the predicted
mask (0/255) resized from the segmentation output, ``overlays/<stem>.png`` both drawn over the radiograph with the
image probability written in the corner; on completion ``predictions.csv`` (image, probability, decision, mask pixels)
ranked by probability, ``submission.csv`` in SIIM's format (``ImageId,EncodedPixels``: the image id is the file's
stem, the predicted mask run-length encoded with :func:`cxr_monai.io.rle_encode` at the stored size; ``-1`` for an
image called negative, whatever its mask) and ``datalist.json`` (each image's source entry, ranked, with ``lesion_mask``
now the *predicted* mask (the source's reference mask is dropped), so the list feeds any bundle that reads masks). The baseline (no ``regions``/``segmentation``
outputs) gets the CSVs only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from cxr_monai.apps.classification.outputs import _draw_label, gather_rows
from cxr_monai.apps.pneumothorax.evaluation import outputs_of
from cxr_monai.handlers.per_image import DatalistWriter
from cxr_monai.reports import write_csv
from cxr_monai.utils import is_rank0
from cxr_monai.visualize import heatmap_overlay, mask_overlay, save_png

__all__ = ["PneumothoraxWriter"]

logger = logging.getLogger(__name__)


def _resize(array: np.ndarray, shape: Sequence[int], mode: str) -> np.ndarray:
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(tensor, size=tuple(shape), mode=mode, **kwargs)[0, 0].numpy()


class PneumothoraxWriter(DatalistWriter):
    """Write ClaSegNet's localisation maps and masks at the stored size, the ranked predictions and SIIM's submission
    CSV (module docstring).

    Args:
        output_dir: where the files go.
        datalist, datalist_keys, base_dir: the source datalist (:class:`~cxr_monai.handlers.DatalistWriter`).
        threshold: decision threshold of the image probability and of the mask.
        overlays: write ``overlays/`` too.

    Example::

        PneumothoraxWriter("runs/clasegnet/inference", datalist="siim.json", base_dir="/data/siim").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        datalist: str | os.PathLike | None = None,
        datalist_keys: Sequence[str] = ("test",),
        base_dir: str | os.PathLike | None = None,
        threshold: float = 0.5,
        overlays: bool = True,
        split: str = "test",
        name: str = "ClaSegNet pneumothorax predictions",
    ) -> None:
        super().__init__(output_dir, datalist, datalist_keys, base_dir, split=split, name=name,
                         drop_keys=("lesion_mask",))
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.overlays = bool(overlays)
        self.rows: list[dict[str, Any]] = []

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        from cxr_monai.io import read_cxr, rle_encode

        if image_path is None:
            raise ValueError("PneumothoraxWriter: the item carries no file name (MetaTensor meta 'filename_or_obj'); "
                             "load images with cxr_monai.io.LoadCXRImaged")
        out = outputs_of(item[self.pred_key], self.threshold)
        positive = out["probability"] >= self.threshold
        stem = self.stem(image_path)
        row: dict[str, Any] = {"image": os.path.abspath(image_path), "image_id": Path(image_path).name.split(".")[0],
                               "probability": out["probability"], "pneumothorax": int(positive), "mask_pixels": "",
                               "encoded_pixels": "-1"}
        new_keys: dict[str, Any] = {}
        if out["regions"] is not None or out["mask"] is not None:
            radiograph, _ = read_cxr(image_path)
            shape = radiograph.shape
            heat = _resize(out["regions"], shape, "bilinear").clip(0, 1) if out["regions"] is not None else None
            mask = _resize(out["mask"], shape, "nearest") > 0.5 if out["mask"] is not None else None
            if heat is not None:
                save_png((heat * 255.0 + 0.5).astype(np.uint8), self.output_dir / "probability" / f"{stem}.png")
            if mask is not None:
                path = save_png(mask.astype(np.uint8) * 255, self.output_dir / "masks" / f"{stem}.png")
                new_keys["lesion_mask"] = str(path)
                row["mask_pixels"] = int(mask.sum())
                if positive:
                    row["encoded_pixels"] = rle_encode(mask)
            if self.overlays:
                tiles = [heatmap_overlay(radiograph, heat, vmax=1.0)] if heat is not None else []
                if mask is not None:
                    tiles.append(mask_overlay(radiograph, [mask]))
                overlay = _draw_label(np.concatenate(tiles, axis=1), f"pneumothorax {out['probability']:.2f}")
                save_png(overlay, self.output_dir / "overlays" / f"{stem}.png")
        row["new_keys"] = new_keys
        self.rows.append(row)

    def completed(self, engine: Engine | None = None) -> Path | None:
        rows = gather_rows(self.rows)  # a collective: every rank calls it
        if not is_rank0() or not rows:
            return None
        ranked = sorted(rows, key=lambda row: -row["probability"])
        path = write_csv(ranked, self.output_dir / "predictions.csv",
                         ["image", "image_id", "probability", "pneumothorax", "mask_pixels"])
        write_csv([{"ImageId": row["image_id"], "EncodedPixels": row["encoded_pixels"]} for row in rows],
                  self.output_dir / "submission.csv", ["ImageId", "EncodedPixels"])
        self.written = []
        for row in ranked:
            self.record(row["image"], row["new_keys"])
        super().completed(engine)
        logger.info("%d images: %d called pneumothorax; %s, submission.csv", len(rows),
                    sum(row["pneumothorax"] for row in rows), path)
        return path
