"""Image grids of a batch written during training (and logged to MLflow by the tracker)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from cxr_monai.utils import is_rank0

__all__ = ["ImageGridSaver"]

logger = logging.getLogger(__name__)

class ImageGridSaver:
    """Write a PNG grid of a network's results on the same samples each ``every_n_epochs`` epochs.

    The first ``num_samples`` samples of ``dataset`` (e.g. the validation set; a multi-sample item counts each
    of its samples) are gathered once, so the grids show one set of images improving. ``grid`` turns them into
    the image to save: a callable taking the list of sample dicts and returning a ``(H, W)`` or ``(3, H, W)``
    tensor or array in [0, 1] (the context encoder's :class:`~cxr_monai.apps.inpainting.InpaintingGrid`, the lung
    segmentation's :class:`~cxr_monai.apps.segmentation.SegmentationGrid`). The bundles' MLflow settings log
    the grid folder as run artifacts (``grids/`` in the run).

    Example::

        ImageGridSaver(val_dataset, "runs/ce/grids", grid=InpaintingGrid(generator, fill_value=0.5)).attach(trainer)
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        output_dir: str | os.PathLike,
        grid: Callable[[list[Mapping[str, Any]]], Any],
        num_samples: int = 8,
        every_n_epochs: int = 1,
        prefix: str = "grid",
    ) -> None:
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.grid = grid
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self._samples: list[Mapping[str, Any]] | None = None
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)

    def samples(self) -> list[Mapping[str, Any]]:
        """The fixed samples, gathered from the dataset on first use."""
        if self._samples is None:
            found: list[Mapping[str, Any]] = []
            for index in range(len(self.dataset)):
                item = self.dataset[index]
                samples = item if isinstance(item, (list, tuple)) else [item]
                # a SkippingCompose dataset holds the record of an unusable image in its place: no sample to show
                found.extend(sample for sample in samples if isinstance(sample, Mapping))
                if len(found) >= self.num_samples:
                    break
            if not found:
                raise ValueError("ImageGridSaver: the dataset gave no samples to show")
            self._samples = found[: self.num_samples]
        return self._samples

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        from cxr_monai.visualize import save_png

        path = self.output_dir / f"{self.prefix}_epoch{engine.state.epoch:04d}.png"
        save_png(self.grid(self.samples()), path)
        self.written.append(path)
