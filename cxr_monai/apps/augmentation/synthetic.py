"""The synthetic training set of seed 002 §3.2: for each training box, new images around the box's undistorted pixels.

:func:`write_synthetic_set` runs a trained :class:`~cxr_monai.networks.PathologyPreservingGenerator` over a dataset of
one entry per box (:func:`~cxr_monai.apps.augmentation.one_entry_per_box`, preprocessed as the bundle's
``inference.json`` does: resized to the working size, ``condition`` = (masked image, box mask) in [-1, 1]) and writes,
under ``output_dir``:

- ``images/<index>_<stem>_box<k>_<n>.png``: 16-bit greyscale PNGs at the working size, [0, 1] as the project reader
  reads them (the box's pixels are the resized source's, up to the 16-bit rounding);
- ``synthetic.json``: a datalist whose ``training`` section lists the synthetic images only, each
  ``{"image": "images/....png", "boxes": [[x_min, y_min, x_max, y_max]], "box_labels": [...], "source": <the real
  image>, "synthetic": true}`` with the box in the PNG's pixels;
- ``datalist.json``: the same with, when ``source_datalist`` is given, its real ``training`` entries first
  (``"synthetic": false``) and its ``validation``, ``test`` and ``test_unhealthy`` sections, paths made absolute: the
  seed's "Ori + Pix2Pix" set, which any detector trains on as it is;
- ``summary.json``: the counts and how much the samples of one box differ (below).

Variation: pix2pix has no noise input; its only randomness is dropout, which the seed's generator keeps on at test
time (Isola et al. 2017 §3.1). With ``dropout=True`` the dropout layers run in training mode while generating, so the
``N`` samples of one box differ; ``summary.json`` reports the mean absolute difference between consecutive samples
of a box outside the box (in [0, 1] intensity) and how many boxes' samples differ at all, so whether they really do is
measured, not assumed (pix2pix's authors observed only minor stochasticity).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_monai.apps.bone_suppression.outputs import write_png16
from cxr_monai.engines.images import output_stem
from cxr_monai.networks.pathology_preserving import enable_dropout
from cxr_monai.transforms.intensity import from_network_range
from cxr_monai.transforms.utils import as_box_array, source_name

__all__ = ["samples_per_box", "write_synthetic_set"]

logger = logging.getLogger(__name__)

#: sections of the source datalist copied into ``datalist.json`` (``healthy`` is the generator's, not a detector's)
COPIED_SECTIONS = ("validation", "test", "test_unhealthy")
#: two samples "differ" when their mean absolute difference outside the box exceeds this (half a 16-bit step)
SAME_IMAGE_TOLERANCE = 0.5 / 65535


def samples_per_box(num_boxes: int, per_box: int | None = None, total: int | None = None, seed: int = 0) -> list[int]:
    """How many synthetic images each box gets: ``per_box`` each, or ``total`` spread as evenly as possible (the seed's
    688 over its 573 boxes: 1 each and a second one for 115 boxes drawn with ``seed``).

    >>> samples_per_box(3, per_box=2)
    [2, 2, 2]
    >>> sum(samples_per_box(573, total=688)), sorted(set(samples_per_box(573, total=688)))
    (688, [1, 2])
    """
    if (per_box is None) == (total is None):
        raise ValueError(f"give exactly one of per_box and total, got per_box={per_box!r}, total={total!r}")
    if per_box is not None:
        if per_box < 0:
            raise ValueError(f"per_box must be >= 0, got {per_box}")
        return [int(per_box)] * num_boxes
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if num_boxes == 0:
        return []
    counts = np.full(num_boxes, total // num_boxes, dtype=np.int64)
    extra = np.random.default_rng(seed).choice(num_boxes, size=total % num_boxes, replace=False)
    counts[extra] += 1
    return counts.tolist()


def _absolute(entry: dict[str, Any]) -> dict[str, Any]:
    from cxr_monai.data.datalist import PATH_KEYS

    return {key: os.path.abspath(value) if key in PATH_KEYS else value for key, value in entry.items()}


def _real_sections(source_datalist: str | os.PathLike, base_dir: str | os.PathLike | None) -> dict[str, list[dict]]:
    from cxr_monai.data import load_datalist, validate_datalist

    document = validate_datalist(source_datalist)
    sections = {}
    for key in ("training", *COPIED_SECTIONS):
        if document.get(key):
            entries = load_datalist(source_datalist, key, base_dir=base_dir)
            sections[key] = [_absolute(entry) for entry in entries]
    for entry in sections.get("training", []):
        entry["synthetic"] = False
    return sections


def write_synthetic_set(
    generator: torch.nn.Module,
    dataset: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    per_box: int | None = None,
    total: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    dropout: bool = True,
    source_datalist: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
    condition_key: str = "condition",
    image_key: str = "image",
    box_key: str = "boxes",
    label_key: str = "box_labels",
) -> dict[str, Any]:
    """Write the synthetic images of every box of ``dataset`` and their datalists (see the module docstring).

    Args:
        generator: the trained generator (its weights loaded), input ``condition`` and output in [-1, 1].
        dataset: one item per box with ``condition`` ``(C + 1, H, W)``, ``image`` (the resized source; its meta names
            the file), ``boxes`` (one box, in the working grid's pixels) and ``box_labels``.
        per_box / total: images per box, or in all (spread over the boxes with ``seed``); exactly one of them.
        seed: seeds the spread and the dropout masks, so a run is repeatable.
        dropout: keep the generator's dropout on while generating (the only source of variation of pix2pix).
        source_datalist, base_dir: the datalist the boxes came from; its real sections go into ``datalist.json``.

    Returns the summary written to ``summary.json``.
    """
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    counts = samples_per_box(len(dataset), per_box, total, seed)
    network = getattr(generator, "module", generator).to(device).eval()
    if dropout:
        enable_dropout(network)
    torch.manual_seed(seed)
    entries: list[dict[str, Any]] = []
    differences: list[float] = []
    for index, count in enumerate(counts):
        if count == 0:
            continue
        item = dataset[index]
        condition = torch.as_tensor(item[condition_key]).float()
        source = source_name(item.get(image_key), item, image_key)
        source = os.path.abspath(source) if source != source_name() else source
        boxes = as_box_array(item[box_key], source, spatial_shape=condition.shape[-2:])
        labels = [str(label) for label in item.get(label_key) or ["finding"] * len(boxes)]
        samples = []
        with torch.no_grad():
            for start in range(0, count, batch_size):
                batch = condition[None].repeat(min(batch_size, count - start), 1, 1, 1).to(device)
                samples.append(from_network_range(network(batch)).clamp(0.0, 1.0).cpu())
        images = torch.cat(samples)[:, 0].numpy()
        if count > 1:
            outside = condition[-1].numpy() < 0.5
            differences.extend(float(np.abs(a - b)[outside].mean()) for a, b in zip(images[:-1], images[1:]))
        stem = f"{index:05d}_{output_stem(source)}_box{int(item.get('box_index', 0))}"
        for number, image in enumerate(images):
            path = write_png16(image, output_dir / "images" / f"{stem}_{number:03d}.png")
            entries.append({"image": str(path.relative_to(output_dir)), box_key: boxes.tolist(), label_key: labels,
                            "source": source, "synthetic": True})
    name = "synthetic images of pathology-preserving pix2pix (seed 002)"
    description = (f"{len(entries)} images at {condition.shape[-1]} x {condition.shape[-2]} px "
                   if entries else "no images ") + f"from {len(dataset)} boxes; boxes in the PNGs' pixels"
    _write_json(output_dir / "synthetic.json", {"name": name, "description": description, "training": entries})
    real = _real_sections(source_datalist, base_dir) if source_datalist is not None else {}
    combined = {"name": name + (" and the real training set" if real else ""), "description": description,
                **real, "training": real.get("training", []) + entries}
    _write_json(output_dir / "datalist.json", combined)
    differing = sum(value > SAME_IMAGE_TOLERANCE for value in differences)
    summary = {
        "boxes": len(dataset),
        "images": len(entries),
        "real_training_entries": len(real.get("training", [])),
        "per_box": per_box,
        "total": total,
        "seed": seed,
        "dropout_at_generation": bool(dropout),
        "sample_pairs_compared": len(differences),
        "sample_pairs_differing": differing,
        "mean_abs_difference_outside_box": float(np.mean(differences)) if differences else None,
        "max_abs_difference_outside_box": float(np.max(differences)) if differences else None,
    }
    _write_json(output_dir / "summary.json", summary)
    logger.info("wrote %d synthetic images of %d boxes to %s; samples of one box differ by %s on average outside the "
                "box (%d of %d pairs differ)", len(entries), len(dataset), output_dir,
                "n/a" if not differences else f"{summary['mean_abs_difference_outside_box']:.4f}", differing,
                len(differences))
    return summary


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")
