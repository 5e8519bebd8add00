"""Ignite trainer for the context encoder of seed 001 (Belli et al., Chest X-rays inpainting).

The project's :class:`~cxr_monai.engines.PhasedAdversarialTrainer` with the context encoder's choices. One
iteration, given a batch of masked patches, their 64 px centres and the border-weight maps:

* **G step** (phases ``g_l2`` and ``joint``): ``fake = G(masked)``; the loss is ``lambda_l2 * L2`` (the
  border-weighted L2 alone) in ``g_l2`` and ``lambda_l2 * L2 + lambda_adv * BCE(D(fake), 1)`` in ``joint``
  (§3.2.3).
* **D step** (phases ``d_only`` and ``joint``): ``BCE(D(real centre), 1) + BCE(D(fake.detach()), 0)``: D judges
  the centre alone, not G's input (an unconditional discriminator).

The epoch-wise schedule of §4.2 (G with L2 only, then D only, then both) and the iteration-wise balancing of
§3.3 (update one network only every k iterations) live in :class:`GanSchedule`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from cxr_monai.apps.inpainting.losses import ContextEncoderLoss
from cxr_monai.engines import GanPhase, GanSchedule, PhasedAdversarialTrainer
from cxr_monai.handlers import finite_scalars
from cxr_monai.losses import AdversarialBCELoss
from cxr_monai.transforms.intensity import to_network_range

__all__ = ["CONTEXT_ENCODER_SCALARS", "PHASE_CODES", "ContextEncoderTrainer", "InpaintingBatch", "context_encoder_scalars"]

#: the per-iteration numbers of :class:`ContextEncoderTrainer` worth a curve in MLflow
CONTEXT_ENCODER_SCALARS = ("loss", "g_loss", "d_loss", "l2", "g_adv", "minimax_value", "d_real", "d_fake", "phase")

#: the metric ``phase``: the trainer's :class:`~cxr_monai.engines.GanPhase` as a number
PHASE_CODES = {phase.value: float(code) for code, phase in enumerate(GanPhase)}


def context_encoder_scalars(output: Mapping[str, Any]) -> dict[str, float]:
    """:data:`CONTEXT_ENCODER_SCALARS` of a trainer output that are finite, the phase as its :data:`PHASE_CODES` number.

    >>> context_encoder_scalars({"loss": 0.5, "d_loss": float("nan"), "phase": "joint"})
    {'loss': 0.5, 'phase': 2.0}
    """
    return finite_scalars(output, CONTEXT_ENCODER_SCALARS, {"phase": PHASE_CODES})



class InpaintingBatch:
    """``prepare_batch`` for inpainting: ``(masked, target, weight)`` on the device, or ``(masked, target)``
    with ``weight_key=None`` (the form MONAI's ``SupervisedEvaluator`` expects).

    The transforms keep intensities in [0, 1] (docs/data_contract.md); with ``network_range=True`` the masked
    patch and the target are mapped to the generator's [-1, 1] here, once per batch, by the same
    :func:`~cxr_monai.transforms.intensity.to_network_range` that inference uses.

    Example::

        prepare = InpaintingBatch()
        masked, target, weight = prepare(batch, torch.device("cpu"))  # masked/target in [-1, 1]
    """

    def __init__(
        self,
        masked_key: str = "masked",
        target_key: str = "target",
        weight_key: str | None = "weight",
        network_range: bool = True,
    ):
        self.masked_key = masked_key
        self.target_key = target_key
        self.weight_key = weight_key
        self.network_range = network_range

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, ...]:
        def to_device(key: str, scale: bool) -> torch.Tensor:
            if key not in batchdata:
                raise KeyError(f"batch has no '{key}' (keys: {sorted(batchdata)}); check the hole transform's keys")
            tensor = torch.as_tensor(batchdata[key])
            tensor = tensor.to(device=device, non_blocking=non_blocking, memory_format=memory_format, **kwargs)
            return to_network_range(tensor) if scale and self.network_range else tensor

        inputs = (to_device(self.masked_key, True), to_device(self.target_key, True))
        return inputs if self.weight_key is None else (*inputs, to_device(self.weight_key, False))


class ContextEncoderTrainer(PhasedAdversarialTrainer):
    """Adversarial trainer for a context encoder (seed 001 §3–4).

    A :class:`~cxr_monai.engines.PhasedAdversarialTrainer` whose D judges the *real centre* (not G's input), whose
    reconstruction loss takes a per-pixel border-weight map (the third item of :class:`InpaintingBatch`), and whose
    default schedule is the paper's (:class:`GanSchedule`). ``engine.state.output`` holds the tensors (``image`` =
    masked input, ``label`` = real centre, ``pred`` = inpainted centre) and, for logging, ``g_loss``, ``d_loss``,
    ``loss``, ``l2``, ``g_adv`` (the adversarial term of G's loss), ``minimax_value``, ``d_real``, ``d_fake``,
    ``update_g``/``update_d`` and the ``phase`` name (:data:`CONTEXT_ENCODER_SCALARS`).

    Args:
        g_loss_function: the joint generator loss (λ_L2 · border-weighted L2 + λ_adv · adversarial);
            defaults to :class:`cxr_monai.apps.inpainting.ContextEncoderLoss` with the paper's 0.998 / 0.002.
        d_loss_function: :class:`cxr_monai.losses.AdversarialBCELoss` (BCE on logits).
        schedule: the :class:`GanSchedule` (default: the paper's 2 G-L2 and 4 D-only epochs).
        prepare_batch: default :class:`InpaintingBatch` (masked, centre, weight in the network's range).
        Other arguments as :class:`~cxr_monai.engines.PhasedAdversarialTrainer` (``amp``, ``channels_last``...).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        g_network: torch.nn.Module,
        g_optimizer: Optimizer,
        d_network: torch.nn.Module,
        d_optimizer: Optimizer,
        g_loss_function: ContextEncoderLoss | None = None,
        d_loss_function: AdversarialBCELoss | None = None,
        schedule: GanSchedule | None = None,
        prepare_batch: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            g_network=g_network,
            g_optimizer=g_optimizer,
            d_network=d_network,
            d_optimizer=d_optimizer,
            g_loss_function=g_loss_function or ContextEncoderLoss(),
            d_loss_function=d_loss_function or AdversarialBCELoss(),
            schedule=schedule or GanSchedule(),
            term_names={"l2": "l2", "adversarial": "g_adv"},
            prepare_batch=prepare_batch or InpaintingBatch(),
            **kwargs,
        )
