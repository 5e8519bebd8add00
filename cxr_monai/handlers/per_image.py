"""Evaluator handlers that act on each output image and once when the run completes (writers, evaluations)."""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.data import MetaTensor

__all__ = ["DatalistWriter", "PerImageHandler", "filename_of"]

logger = logging.getLogger(__name__)


def filename_of(value: Any) -> str | None:
    """The file a MetaTensor was loaded from (its ``filename_or_obj`` meta), or None."""
    if isinstance(value, MetaTensor):
        name = value.meta.get("filename_or_obj")
        return str(name) if name else None
    return None


class PerImageHandler(ABC):
    """Base of the evaluator handlers that act on each decollated output item (``item``) and once on completion
    (``completed``), with the item's image file found from its MetaTensor meta.

    An engine's output holds ``image``, ``label`` and ``pred`` only; ``batch_keys`` names inputs the network took
    besides the image (a dual-branch classifier's ``lateral``), which each item then also carries, taken from the
    engine's batch (decollated)."""

    pred_key = "pred"
    image_key = "image"
    batch_keys: tuple[str, ...] = ()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _batch_items(self, engine: Engine, count: int) -> list[dict[str, Any]]:
        batch = engine.state.batch
        if not self.batch_keys or batch is None:
            return [{} for _ in range(count)]
        if isinstance(batch, Mapping):  # MONAI engines decollate it by default (decollate=True); not always
            from monai.data import decollate_batch

            batch = decollate_batch({key: batch[key] for key in self.batch_keys if key in batch})
        items = [{key: item[key] for key in self.batch_keys if key in item} for item in batch]
        if len(items) != count:
            raise ValueError(f"{type(self).__name__}: the batch holds {len(items)} items and the output {count}")
        return items

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, (list, tuple)) else [output]
        for extra, item in zip(self._batch_items(engine, len(items)), items):
            item = {**extra, **item} if extra else item
            self.item(item, filename_of(item[self.pred_key]) or filename_of(item.get(self.image_key)))

    @abstractmethod
    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        """Act on one output item of the image ``image_path``."""

    @abstractmethod
    def completed(self, engine: Engine | None = None) -> Any:
        """Act once the evaluator has seen every image (write what was gathered)."""


class DatalistWriter(PerImageHandler):
    """Base of the writers that turn an evaluator's outputs into files per image and a datalist listing them.

    The source ``datalist`` (the file the evaluator's list came from, read with ``base_dir``) gives each image its
    split among ``datalist_keys`` and its other keys; :meth:`record` adds an image's entry with the new keys (paths
    relative to ``output_dir``), other path keys made absolute, and on completion ``datalist.json`` in
    ``output_dir`` lists every recorded entry under its split (load it with ``base_dir=output_dir``), with the
    source's ``label_names`` when it has them. The source's splits stay in the document even when empty (readers such as the context encoder require them); images not in
    the source go under ``split``. Subclasses implement :meth:`item` (write the files, then :meth:`record`).

    Example::

        class Writer(DatalistWriter):
            def item(self, item, image_path):
                path = save_png(..., self.output_dir / "maps" / f"{self.stem(image_path)}.png")
                self.record(image_path, {"heatmap": path})
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        datalist: str | os.PathLike | None = None,
        datalist_keys: Sequence[str] = ("test", "test_unhealthy"),
        base_dir: str | os.PathLike | None = None,
        image_key: str = "image",
        split: str = "test",
        name: str = "model outputs",
        drop_keys: Sequence[str] = (),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.split = split
        self.name = name
        self.drop_keys = tuple(drop_keys)
        self.entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self.splits: list[str] = []
        self.label_names: list[str] | None = None  # the source's class names, kept with the entries' labels
        if datalist is not None:
            from cxr_monai.data import load_datalist, validate_datalist

            present = validate_datalist(datalist)  # a broken file fails here, naming itself
            self.label_names = present.get("label_names")
            self.splits = [key for key in datalist_keys if key in present]
            for key in self.splits:
                for entry in load_datalist(datalist, key, base_dir=base_dir):
                    self.entries[os.path.abspath(entry[image_key])] = (key, entry)
        self.written: list[tuple[str, dict[str, Any]]] = []
        self._stems: set[str] = set()

    def stem(self, image_path: str) -> str:
        """A file stem for this image's outputs, unique within this writer."""
        from cxr_monai.engines.images import unique_output_stem

        return unique_output_stem(image_path, self._stems)

    def record(self, image_path: str, paths: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
        """Add the entry of ``image_path`` with ``paths`` (files under ``output_dir``); returns it."""
        from cxr_monai.data.datalist import PATH_KEYS

        absolute = os.path.abspath(image_path)
        split, source = self.entries.get(absolute, (self.split, {}))
        # the list is read from output_dir: every other path of the source entry must not depend on the cwd
        entry = {key: os.path.abspath(value) if key in PATH_KEYS and isinstance(value, str) else value
                 for key, value in source.items() if key not in self.drop_keys}
        entry[self.image_key] = absolute
        entry.update({key: Path(path).relative_to(self.output_dir).as_posix() if Path(path).is_absolute()
                      else Path(path).as_posix() for key, path in paths.items()})
        self.written.append((split, entry))
        return entry

    def completed(self, engine: Engine | None = None) -> Path | None:
        """Write ``datalist.json`` (rank 0 only); returns its path, or None when nothing was written."""
        from cxr_monai.utils import is_rank0

        if not is_rank0() or not self.written:
            return None
        path = self.output_dir / "datalist.json"
        document: dict[str, Any] = {"name": self.name, "description": f"{self.name}: image paths absolute, the "
                                    "written files relative to this file's folder"}
        if self.label_names is not None:
            document["label_names"] = self.label_names
        for split in self.splits:
            document[split] = []
        for split, entry in self.written:
            document.setdefault(split, []).append(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %d entries to %s", len(self.written), path)
        return path
