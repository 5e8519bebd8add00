"""Early stopping on the validator's metric from the trainer's side (``cxr_monai.handlers.EarlyStopOnValidation``)."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from cxr_monai.handlers import EarlyStopOnValidation


def _trainer_with_validation(scores):
    validator = Engine(lambda engine, batch: None)
    trainer = Engine(lambda engine, batch: None)

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):  # what MONAI's ValidationHandler does: run the validator, which computes its metrics
        validator.state.metrics = {"val_auc": scores[engine.state.epoch - 1]}

    return trainer, validator


def test_stops_after_patience_validations_without_improvement():
    trainer, validator = _trainer_with_validation([0.5, 0.7, 0.7, 0.69, 0.9, 0.95])
    EarlyStopOnValidation(validator, "val_auc", patience=2).attach(trainer)
    trainer.run([0], max_epochs=6)
    assert trainer.state.epoch == 4  # epochs 3 and 4 did not beat 0.7


def test_keeps_training_while_the_metric_improves_and_names_a_missing_metric():
    trainer, validator = _trainer_with_validation([0.5, 0.6, 0.7])
    EarlyStopOnValidation(validator, "val_auc", patience=1).attach(trainer)
    trainer.run([0], max_epochs=3)
    assert trainer.state.epoch == 3
    trainer, validator = _trainer_with_validation([0.5])
    EarlyStopOnValidation(validator, "val_dice", patience=1).attach(trainer)
    with pytest.raises(KeyError, match="no metric 'val_dice'"):
        trainer.run([0], max_epochs=1)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopOnValidation(validator, "val_auc", patience=0)
