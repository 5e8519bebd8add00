"""Evaluator handlers that act on each output image and once when the run completes (writers, evaluations)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events
from monai.data import MetaTensor

__all__ = ["PerImageHandler", "filename_of"]


def filename_of(value: Any) -> str | None:
    """The file a MetaTensor was loaded from (its ``filename_or_obj`` meta), or None."""
    if isinstance(value, MetaTensor):
        name = value.meta.get("filename_or_obj")
        return str(name) if name else None
    return None


class PerImageHandler(ABC):
    """Base of the evaluator handlers that act on each decollated output item (``item``) and once on completion
    (``completed``), with the item's image file found from its MetaTensor meta."""

    pred_key = "pred"
    image_key = "image"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, (list, tuple)) else [output]:
            self.item(item, filename_of(item[self.pred_key]) or filename_of(item.get(self.image_key)))

    @abstractmethod
    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        """Act on one output item of the image ``image_path``."""

    @abstractmethod
    def completed(self, engine: Engine | None = None) -> Any:
        """Act once the evaluator has seen every image (write what was gathered)."""
