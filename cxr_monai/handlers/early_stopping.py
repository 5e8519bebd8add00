"""Early stopping of a trainer on its validator's key metric, wired from the trainer's side."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping

__all__ = ["EarlyStopOnValidation"]

logger = logging.getLogger(__name__)


class EarlyStopOnValidation:
    """Stop training when the validator's ``metric`` has not improved for ``patience`` validations (Ignite's
    ``EarlyStopping``; higher is better).

    MONAI's ``EarlyStopHandler`` sits on the validator and needs the trainer, which a bundle config can only give it
    through a ``set_trainer`` call in ``initialize`` (the trainer already refers to the validator, so a reference back
    would be circular), and ``multi_gpu_train.json`` replaces ``initialize``. This handler goes in the *trainer's*
    handlers, after the ``ValidationHandler`` (both run at the end of an epoch, in that order), and takes the trainer
    from ``attach``. Every rank runs the validation (the metric is reduced across ranks), so all ranks stop together.

    Args:
        validator: the evaluator run by the ``ValidationHandler``.
        metric: the name of its metric (e.g. ``val_auc``).
        patience: validations without improvement before stopping.
        min_delta: the least increase that counts as an improvement.

    Example::

        EarlyStopOnValidation(evaluator, "val_auc", patience=5).attach(trainer)
    """

    def __init__(self, validator: Engine, metric: str, patience: int = 5, min_delta: float = 0.0) -> None:
        if int(patience) < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.validator = validator
        self.metric = metric
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.stopper: EarlyStopping | None = None

    def score(self, _: Any = None) -> float:
        metrics = self.validator.state.metrics
        if self.metric not in metrics:
            raise KeyError(f"EarlyStopOnValidation: the validator has no metric '{self.metric}' "
                           f"(it has {sorted(metrics)}); put this handler after the ValidationHandler")
        return float(metrics[self.metric])

    def attach(self, engine: Engine) -> None:
        self.stopper = EarlyStopping(self.patience, self.score, engine, min_delta=self.min_delta)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.stopper)
