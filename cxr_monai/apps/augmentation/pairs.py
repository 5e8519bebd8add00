"""Training pairs of pathology-preserving pix2pix (seed 002 §2.2) and the grid that shows them during training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.networks import eval_mode

from cxr_monai.transforms.intensity import from_network_range
from cxr_monai.visualize import labelled_row, stack_rows

__all__ = ["Pix2PixGrid", "one_entry_per_box"]


def one_entry_per_box(entries: Sequence[Mapping[str, Any]], box_key: str = "boxes",
                      label_key: str = "box_labels") -> list[dict[str, Any]]:
    """One entry per annotation, as the seed's training pairs are (573 pairs from the training boxes, not one pair per
    image): a copy of the entry with that box alone under ``box_key`` (and its label under ``label_key``) and its
    position in the image's list under ``box_index``. Entries without boxes give none.

    >>> one_entry_per_box([{"image": "a.png", "boxes": [[0, 0, 4, 4], [5, 5, 8, 8]], "box_labels": ["E", "P"]},
    ...                    {"image": "b.png"}])[1]
    {'image': 'a.png', 'boxes': [[5, 5, 8, 8]], 'box_labels': ['P'], 'box_index': 1}
    """
    out = []
    for entry in entries:
        boxes = entry.get(box_key)
        if boxes is None or len(boxes) == 0:
            continue
        labels = entry.get(label_key)
        if labels is not None and len(labels) != len(boxes):
            raise ValueError(f"{entry.get('image', '<entry>')}: {len(boxes)} boxes but {len(labels)} '{label_key}'.")
        for index, box in enumerate(boxes):
            single = {**entry, box_key: [box], "box_index": index}
            if labels is not None:
                single[label_key] = [labels[index]]
            out.append(single)
    return out


def _tile(image: torch.Tensor) -> np.ndarray:
    return from_network_range(image).clamp(0.0, 1.0)[0].cpu().numpy()


class Pix2PixGrid:
    """The grid :class:`~cxr_monai.handlers.ImageGridSaver` writes while the pix2pix bundle trains: per sample, a row
    of the input ``x = y ⊙ m``, the output ``x̃`` and the target ``y``.

    Samples hold ``condition`` (the masked image and the box mask, :class:`~cxr_monai.networks.
    PathologyPreservingGenerator`'s input) and ``image`` (the target), both in the network range [-1, 1]. The
    network runs in eval mode (no dropout: the grids of successive epochs compare like with like).

    Example::

        ImageGridSaver(val_dataset, "runs/pix2pix/grids", grid=Pix2PixGrid(generator)).attach(trainer)
    """

    def __init__(self, network: torch.nn.Module, condition_key: str = "condition", target_key: str = "image") -> None:
        self.network = network
        self.condition_key = condition_key
        self.target_key = target_key

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        network = getattr(self.network, "module", self.network)
        device = next(network.parameters()).device
        conditions = torch.stack([torch.as_tensor(s[self.condition_key]).float() for s in samples]).to(device)
        with eval_mode(network), torch.no_grad():
            outputs = network(conditions).cpu()
        rows = []
        for sample, condition, output in zip(samples, conditions.cpu(), outputs):
            tiles = [_tile(condition[:-1]), _tile(output)]
            if sample.get(self.target_key) is not None:
                tiles.append(_tile(torch.as_tensor(sample[self.target_key]).float()))
            rows.append(labelled_row(tiles, "input | output | target"))
        return stack_rows(rows)
