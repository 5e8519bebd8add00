"""Bone and bone-suppressed images out of the bone-suppression GAN, at the original size, with a datalist.

The generator predicts the **bone image** (what dual-energy subtraction shows: the ribs and clavicles' contribution
to the radiograph); the **bone-suppressed** image is the radiograph minus it, clipped to [0, 1] (seed 003 §3.2:
"subtractive from the original radiograph"). The radiograph enters the network in [-1, 1]; the bone image is
trained and predicted in [0, 1] as it is (mostly 0, so "no bone" sits at the centre of the generator's tanh, not at
its asymptote, where mapping it to [-1, 1] would put it and the gradients vanish). The bundle's inference
postprocessing clips the prediction to [0, 1] and inverts the resize (``Invertd``), so :class:`BoneImageWriter` gets
the bone image at the stored size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks import eval_mode
from PIL import Image

from cxr_monai.handlers.per_image import DatalistWriter
from cxr_monai.transforms.intensity import from_network_range
from cxr_monai.visualize import labelled_row, save_png, stack_rows

__all__ = ["BoneImageWriter", "BoneSuppressionGrid", "figure_row", "image_of", "suppress_bones", "write_png16"]

logger = logging.getLogger(__name__)


def image_of(value: Any) -> np.ndarray:
    """``(H, W)`` float32 of a ``(1, H, W)`` / ``(H, W)`` tensor or array."""
    array = value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float32)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"expected a single-channel 2-D image, got shape {tuple(np.shape(value))}")
    return array


def suppress_bones(radiograph: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """The bone-suppressed image: ``clip(radiograph - bone, 0, 1)`` (both in [0, 1], lungs dark).

    >>> suppress_bones(np.array([0.5, 0.9]), np.array([0.0, 0.3]))
    array([0.5, 0.6])
    """
    if radiograph.shape != bone.shape:
        raise ValueError(f"radiograph {radiograph.shape} and bone image {bone.shape} differ in size")
    return np.clip(radiograph - bone, 0.0, 1.0)


def write_png16(image: np.ndarray, path: str | os.PathLike) -> Path:
    """An image in [0, 1] as a 16-bit greyscale PNG (the 12-bit detail of a radiograph survives)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 65535).astype(np.uint16)).save(path)
    return path


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)


def figure_row(radiograph: np.ndarray, bone: np.ndarray, label: str, target: np.ndarray | None = None,
               gain: float = 3.0) -> np.ndarray:
    """One row like seed 003 Fig. 4: radiograph | bone image (× ``gain``) | bone-suppressed [| target bone]."""
    tiles = [radiograph, np.clip(bone * gain, 0, 1), suppress_bones(radiograph, bone)]
    if target is not None:
        tiles.append(np.clip(target * gain, 0, 1))
    return labelled_row([_grey_rgb(tile) for tile in tiles], label)


class BoneSuppressionGrid:
    """The grid :class:`~cxr_monai.handlers.ImageGridSaver` writes during training: per sample, the radiograph, the
    predicted bone image, the bone-suppressed image and the target bone image (bone images × 3 for visibility).

    Samples hold ``image`` in the network range [-1, 1] and ``bone`` in [0, 1] (the bundle's transforms); the
    network's output clipped to [0, 1] is the bone image.

    Example::

        ImageGridSaver(val_dataset, "runs/bone/grids", grid=BoneSuppressionGrid(generator)).attach(trainer)
    """

    def __init__(self, network: torch.nn.Module, image_key: str = "image", target_key: str = "bone") -> None:
        self.network = network
        self.image_key = image_key
        self.target_key = target_key

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        network = getattr(self.network, "module", self.network)
        device = next(network.parameters()).device
        inputs = torch.stack([torch.as_tensor(sample[self.image_key]).float() for sample in samples]).to(device)
        with eval_mode(network), torch.no_grad():
            bones = network(inputs).clamp(0.0, 1.0).cpu()
        rows = []
        for sample, image, bone in zip(samples, from_network_range(inputs).cpu(), bones):
            target = sample.get(self.target_key)
            target = image_of(torch.as_tensor(target)) if target is not None else None
            rows.append(figure_row(image_of(image), image_of(bone), "input | bone | suppressed | target", target))
        return stack_rows(rows)


class BoneImageWriter(DatalistWriter):
    """Write each predicted bone image and the bone-suppressed image at the original size, and a datalist.

    Per image: ``bones/<stem>.png`` and ``suppressed/<stem>.png`` (16-bit greyscale PNG, [0, 1] → 0..65535, lungs
    dark as the project reader reads them) and ``figures/<stem>.png`` (radiograph | bone × 3 | suppressed, as seed
    003 Fig. 4). When the run completes, ``datalist.json`` in ``output_dir`` lists every image with its
    ``bone_suppressed`` and ``bone`` keys (:class:`~cxr_monai.handlers.DatalistWriter`: each entry keeps its split
    and keys from ``datalist``), for the classifier, which reads ``bone_suppressed`` as an extra channel.

    Example::

        BoneImageWriter("runs/bone/inference", datalist="nih.json", base_dir="/data/nih").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        datalist: str | os.PathLike | None = None,
        datalist_keys: Sequence[str] = ("test", "test_unhealthy"),
        base_dir: str | os.PathLike | None = None,
        pred_key: str = "pred",
        image_key: str = "image",
        split: str = "test",
        write_figures: bool = True,
        name: str = "bone and bone-suppressed images predicted by the bone-suppression bundle",
    ) -> None:
        super().__init__(output_dir, datalist, datalist_keys, base_dir, image_key=image_key, split=split, name=name)
        self.pred_key = pred_key
        self.write_figures = write_figures

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        self.write(item[self.pred_key], image_path)

    def write(self, prediction: Any, image_path: str | None) -> dict[str, Any]:
        """Write the files of one image from its bone image in [0, 1] at the original size; returns its entry."""
        from cxr_monai.io import read_cxr

        if image_path is None:
            raise ValueError("BoneImageWriter: the prediction carries no file name (MetaTensor meta "
                             "'filename_or_obj'); load images with cxr_monai.io.LoadCXRImaged")
        bone = np.clip(image_of(prediction), 0.0, 1.0)
        radiograph, _ = read_cxr(image_path)
        if radiograph.shape != bone.shape:
            raise ValueError(f"{image_path}: the bone image is {bone.shape} but the radiograph {radiograph.shape}; "
                             "the inference postprocessing must invert the resize (Invertd)")
        stem = self.stem(image_path)
        bone_png = write_png16(bone, self.output_dir / "bones" / f"{stem}.png")
        suppressed_png = write_png16(suppress_bones(radiograph, bone), self.output_dir / "suppressed" / f"{stem}.png")
        if self.write_figures:
            save_png(figure_row(radiograph, bone, Path(image_path).name), self.output_dir / "figures" / f"{stem}.png")
        return self.record(image_path, {"bone_suppressed": suppressed_png, "bone": bone_png})
