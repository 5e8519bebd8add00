"""Training and evaluation engines for torchvision detectors (seed 002's Faster R-CNN), on MONAI's engines.

A detector takes a *list* of images of any size and, in training, a list of targets ``{"boxes": (N, 4),
"labels": (N,)}`` (:class:`~cxr_monai.transforms.detection.DetectionTargetsd`); it returns its loss dict in
training and one ``{"boxes", "labels", "scores"}`` per image in eval mode. So batches stay lists: the loaders
collate with :func:`detection_collate` (a dict of per-item lists, which
:class:`~cxr_monai.data.robust.SkippingCollate` can wrap; MONAI's ``no_collation`` gives a list of items, which
:class:`DetectionBatch` also takes), and :class:`DetectionBatch` moves each item to the device.

Example::

    trainer = DetectionTrainer("cuda", max_epochs=31, train_data_loader=loader, network=model,
                               optimizer=torch.optim.Adam(model.parameters(), 3e-4), epoch_length=500, amp=True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer, Workflow
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

__all__ = ["DetectionBatch", "DetectionEvaluator", "DetectionTrainer", "detection_collate"]


def detection_collate(items: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """A batch of detection items as a dict of per-item lists (images of any size; targets of any box count).

    >>> batch = detection_collate([{"image": 1, "targets": "a"}, {"image": 2, "targets": "b"}])
    >>> batch
    {'image': [1, 2], 'targets': ['a', 'b']}
    """
    if not items:
        return {}
    keys = [key for key in items[0] if all(key in item for item in items)]
    return {key: [item[key] for item in items] for key in keys}


def _as_items(batch: Any, key: str) -> list:
    if isinstance(batch, Mapping):
        return list(batch[key])
    return [item[key] for item in batch]  # MONAI's no_collation: a list of items


class DetectionBatch:
    """``prepare_batch`` of the detection engines: ``(images, targets)`` as lists, each tensor on the device.

    ``batch[image_key]`` holds ``(C, H, W)`` images (MetaTensors become plain tensors: torchvision's transform
    indexes and stacks them), ``batch[target_key]`` the targets (``None`` for a batch without ground truth, e.g.
    inference). Takes a :func:`detection_collate` dict or a list of items.

    >>> images, targets = DetectionBatch()({"image": [torch.zeros(1, 4, 4)], "targets": [{"labels": torch.ones(1)}]},
    ...                                    "cpu")
    >>> images[0].shape, targets[0]["labels"].tolist()
    (torch.Size([1, 4, 4]), [1.0])
    """

    def __init__(self, image_key: str = CommonKeys.IMAGE, target_key: str = "targets") -> None:
        self.image_key = image_key
        self.target_key = target_key

    def __call__(self, batchdata: Any, device: torch.device | str | None = None, non_blocking: bool = False,
                 **kwargs: Any) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None]:
        images = [torch.as_tensor(image).as_subclass(torch.Tensor).to(device, non_blocking=non_blocking)
                  for image in _as_items(batchdata, self.image_key)]
        has_targets = (self.target_key in batchdata if isinstance(batchdata, Mapping)
                       else all(self.target_key in item for item in batchdata))
        if not has_targets:
            return images, None
        targets = [{name: value.to(device, non_blocking=non_blocking) for name, value in target.items()}
                   for target in _as_items(batchdata, self.target_key)]
        return images, targets


def _autocast(engine: Any) -> contextlib.AbstractContextManager:
    if not engine.amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(engine.state.device).type, **engine.amp_kwargs)


def _amp_dtype(device: torch.device | str, amp_kwargs: Mapping[str, Any]) -> torch.dtype:
    return amp_kwargs.get("dtype") or torch.get_autocast_dtype(torch.device(device).type)


class DetectionTrainer(SupervisedTrainer):
    """MONAI ``SupervisedTrainer`` for a torchvision detector: one iteration is ``losses = network(images,
    targets)`` (torchvision's loss dict), backward of their sum, an optimiser step.

    ``engine.state.output``: ``image`` / ``label`` (the device lists), ``loss`` (the sum, a detached tensor, for
    MONAI's handlers and :class:`~cxr_monai.handlers.NanGuard`) and each of torchvision's terms as a float
    (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` for Faster R-CNN), for
    ``StatsHandler`` / ``MLFlowTracker`` through :func:`~cxr_monai.handlers.finite_scalars`.

    AMP as :class:`~cxr_monai.engines.PhasedAdversarialTrainer`: ``torch.autocast(device.type, **amp_kwargs)``
    around the forward pass (float16 on CUDA, bfloat16 on a CPU, unless ``amp_kwargs`` names a ``dtype``), a
    ``GradScaler`` (``engine.scaler``, checkpointed with the network) when that dtype is float16; without AMP the
    scaler is a disabled no-op.

    Args:
        network: the detector (e.g. :func:`~cxr_monai.networks.faster_rcnn_fpn`), or DDP around one.
        prepare_batch: default :class:`DetectionBatch` (``image`` and ``targets``).
        Other arguments as :class:`monai.engines.SupervisedTrainer` (``loss_function`` and ``inferer`` are not
        used: the detector computes its own losses).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch_length: int | None = None,
        prepare_batch: Callable | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        non_blocking: bool = False,
        optim_set_to_none: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=_losses_come_from_the_detector,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch or DetectionBatch(),
            train_handlers=train_handlers,
            amp=False,  # the parent would make a deprecated CUDA-only scaler; ours is made below
            amp_kwargs=amp_kwargs,
            decollate=False,
            optim_set_to_none=optim_set_to_none,
            **kwargs,
        )
        self.amp = bool(amp)
        dtype = _amp_dtype(device, self.amp_kwargs)
        if self.amp and dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"amp_kwargs dtype {dtype} is not a mixed-precision dtype; use torch.float16 or "
                             "torch.bfloat16.")
        self.scaler = torch.amp.GradScaler(torch.device(device).type, enabled=self.amp and dtype == torch.float16)

    def run(self) -> None:  # type: ignore[override]
        """Train (continuing from the current state if called again), keeping this engine's scaler."""
        Workflow.run(self)  # Trainer.run would replace the scaler with a CUDA-only one

    def _iteration(self, engine: DetectionTrainer, batchdata: Any) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        if targets is None:
            raise ValueError("a detection training batch needs targets (DetectionTargetsd's 'targets')")
        engine.state.output = {CommonKeys.IMAGE: images, CommonKeys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with _autocast(engine):
            losses = engine.network(images, targets)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        total = sum(value.float() for value in losses.values())
        engine.state.output[CommonKeys.LOSS] = total
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.scaler.scale(total).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
        engine.state.output[CommonKeys.LOSS] = total.detach()
        engine.state.output.update({name: float(value.detach()) for name, value in losses.items()})
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _losses_come_from_the_detector(*args: Any) -> torch.Tensor:
    raise RuntimeError("a torchvision detector computes its own losses; DetectionTrainer never calls loss_function")


class DetectionEvaluator(SupervisedEvaluator):
    """MONAI ``SupervisedEvaluator`` for a torchvision detector: ``network(images)`` in eval mode under
    ``torch.inference_mode()`` (and autocast with ``amp``).

    ``engine.state.output``: ``image`` (the input list, on the device), ``pred`` (one ``{"boxes", "labels",
    "scores"}`` per image, float32 on the CPU), ``label`` (the targets on the CPU, or ``None``) and ``image_path``
    (each image's ``filename_or_obj``, or ``"image_<iteration>_<n>"`` for an in-memory array). Handlers such as
    :class:`~cxr_monai.apps.localisation.LocalisationHistory` read them at ``ITERATION_COMPLETED``.

    Args:
        network: the detector, or DDP around one.
        prepare_batch: default :class:`DetectionBatch`.
        Other arguments as :class:`monai.engines.SupervisedEvaluator`.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        prepare_batch: Callable | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, network=network,
                         prepare_batch=prepare_batch or DetectionBatch(), val_handlers=val_handlers, amp=False,
                         amp_kwargs=amp_kwargs, non_blocking=non_blocking, decollate=False, **kwargs)
        self.amp = bool(amp)

    def _iteration(self, engine: DetectionEvaluator, batchdata: Any) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        paths = [_image_path(image, engine.state.iteration, index)
                 for index, image in enumerate(_as_items(batchdata, engine.prepare_batch.image_key))
                 ] if isinstance(engine.prepare_batch, DetectionBatch) else []
        images, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        engine.network.eval()
        with torch.inference_mode(), _autocast(engine):
            detections = engine.network(images)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output = {
            CommonKeys.IMAGE: images,
            CommonKeys.PRED: [{name: value.detach().float().cpu() if value.is_floating_point() else value.cpu()
                               for name, value in found.items()} for found in detections],
            CommonKeys.LABEL: None if targets is None else [{name: value.cpu() for name, value in target.items()}
                                                            for target in targets],
            "image_path": paths or [f"image_{engine.state.iteration}_{i}" for i in range(len(images))],
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _image_path(image: Any, iteration: int, index: int) -> str:
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return f"image_{iteration}_{index}"
