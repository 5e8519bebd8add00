"""Run events and handlers that report failures and skipped images on one line."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import torch
from ignite.engine import Engine, EventEnum, Events

from cxr_monai.data.robust import SKIPPED_KEY, SkippingDataset, root_cause
from cxr_monai.utils import any_rank, is_distributed, one_line_error

__all__ = ["FailureHandler", "RunEvents", "SkippedImagesHandler", "register_run_events"]

logger = logging.getLogger(__name__)

class RunEvents(EventEnum):
    """Events the project's handlers fire on a trainer: ``FAILED`` once, when the run stops with an exception
    (fired by :class:`FailureHandler`; the exception is ``engine.state.failure``)."""

    FAILED = "run_failed"


def register_run_events(engine: Engine) -> None:
    if not engine.has_registered_events(RunEvents.FAILED):
        engine.register_events(*RunEvents)


class FailureHandler:
    """The first ``EXCEPTION_RAISED`` handler of a trainer: report the failure in one line, tell the handlers that
    must act on it, re-raise.

    Ignite calls ``EXCEPTION_RAISED`` handlers in attach order and the first that raises ends the list, so with
    MONAI's ``StatsHandler`` (which logs the whole traceback, then raises) no later handler learns of a failure.
    Attached before it (first in the bundle's ``train#handlers``), this handler logs ``"<engine> stopped at
    iteration <i> (epoch <e>): <root cause>"`` (the innermost exception of MONAI's ``RuntimeError('applying transform
    ...')`` chains: the one that names the file), stores the exception as ``engine.state.failure``, fires
    :attr:`RunEvents.FAILED` (where :class:`MLFlowTracker` ends its run FAILED) and re-raises the exception
    unchanged, so a bug keeps its traceback.

    Example::

        trainer = ContextEncoderTrainer(..., train_handlers=[FailureHandler(), NanGuard(), StatsHandler()])
    """

    def attach(self, engine: Engine) -> None:
        register_run_events(engine)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self)

    def __call__(self, engine: Engine, error: BaseException) -> None:
        if getattr(engine.state, "failure", None) is error:  # Ignite hands a re-raised exception on once more
            raise error
        engine.logger.error(
            f"{type(engine).__name__} stopped at iteration {engine.state.iteration} (epoch {engine.state.epoch}): "
            f"{one_line_error(root_cause(error))}"
        )
        engine.state.failure = error
        try:
            engine.fire_event(RunEvents.FAILED)
        except Exception as handler_error:  # the run's own error is the one to report
            engine.logger.warning(f"a handler of {RunEvents.FAILED} failed too: {handler_error!r}")
        raise error


class SkippedImagesHandler:
    """Record the images a training run skipped as they reach the trainer, and stop the run when too many are.

    A :class:`~cxr_monai.data.robust.SkippingDataset` replaces each bad image by a usable one and sends its record
    along in ``batch["skipped_images"]`` (:class:`~cxr_monai.data.robust.SkippingCollate`), from whichever DataLoader
    worker process read it. This handler takes the records out of each batch before the iteration runs and adds them
    to the dataset's :class:`~cxr_monai.data.robust.SkipLog` (a warning naming the file and the reason, a row of
    ``skipped.csv``); when more than ``max_fraction`` of the dataset is skipped (or, of the images whose lung lesions
    cover, more than ``max_lesion_covered_fraction``) it raises
    :class:`~cxr_monai.data.robust.TooManySkippedError` with the counts and the first reasons. When the run starts it
    checks the log's other stages too (the bundle's validation images, skipped while the config was read). Under
    torch.distributed the records of all ranks are gathered whenever a rank has new ones (otherwise one all-reduce of
    a flag per iteration), so every rank counts the same images and stops at the same iteration; rank 0 writes them.

    Attached to a validation evaluator too (``gather=False``: every rank validates the same images), it takes the
    records out of the validation batches, which MONAI's evaluators could not decollate otherwise.

    Example::

        dataset = SkippingDataset(CacheDataset(datalist, SkippingCompose(transforms)), SkipLog("runs/ce/skipped.csv"))
        SkippedImagesHandler(dataset).attach(trainer)
    """

    def __init__(self, dataset: SkippingDataset, key: str = SKIPPED_KEY, gather: bool = True) -> None:
        if dataset.skip_log is None:
            raise ValueError("SkippedImagesHandler: the dataset has no skip_log to record the skipped images in.")
        self.skip_log = dataset.skip_log
        self.stage = dataset.stage
        self.total = len(dataset)
        self.key = key
        self.gather = gather

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self.skip_log.check()

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        records = list(batch.pop(self.key, ())) if isinstance(batch, MutableMapping) else []
        if self.gather and is_distributed():
            if not any_rank(bool(records)):
                return
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, records)
            records = [record for part in gathered for record in part]
        for record in records:
            self.skip_log.add(self.stage, record, self.total, check=False)
        if records:
            self.skip_log.check(self.stage)

    def completed(self, engine: Engine) -> None:
        count = self.skip_log.count(self.stage)
        if count:
            where = f", listed in {self.skip_log.path}" if self.skip_log.path is not None else ""
            engine.logger.warning(f"{self.stage}: {count} of {self.total} images were skipped{where}")
