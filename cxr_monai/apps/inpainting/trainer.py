"""Ignite trainer for the context encoder of seed 001 (Belli et al., Chest X-rays inpainting).

One iteration, given a batch of masked patches, their 64 px centres and the border-weight maps:

* **G step** (phases ``g_l2`` and ``joint``): ``fake = G(masked)``; the loss is ``lambda_l2 * L2`` (the
  border-weighted L2 alone) in ``g_l2`` and ``lambda_l2 * L2 + lambda_adv * BCE(D(fake), 1)`` in ``joint``
  (§3.2.3).
* **D step** (phases ``d_only`` and ``joint``): ``BCE(D(real centre), 1) + BCE(D(fake.detach()), 0)``.

The epoch-wise schedule of §4.2 (G with L2 only, then D only, then both) and the iteration-wise balancing of
§3.3 (update one network only every k iterations) live in :class:`GanSchedule`; both are functions of the
engine's epoch/iteration counters, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import AdversarialTrainer, Workflow
from monai.engines.utils import IterationEvents
from monai.utils import AdversarialKeys, CommonKeys
from torch.optim import Optimizer

from cxr_monai.apps.inpainting.losses import ContextEncoderLoss
from cxr_monai.engines import GanPhase, GanSchedule
from cxr_monai.handlers import finite_scalars
from cxr_monai.losses import AdversarialBCELoss, gan_diagnostics
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


class ContextEncoderTrainer(AdversarialTrainer):
    """Adversarial trainer for a context encoder (seed 001 §3–4), on MONAI's :class:`AdversarialTrainer`.

    MONAI's trainer gives the handlers, events, metrics and AMP plumbing; this class replaces its iteration
    because the context encoder needs three things the parent does not do: D judges the *real centre*
    (not G's input), the reconstruction loss takes a per-pixel border-weight map, and the phases/balancing of
    :class:`GanSchedule` decide which network steps.

    ``engine.state.output`` holds the tensors (``image`` = masked input, ``label`` = real centre, ``pred`` =
    inpainted centre) and plain floats for logging: ``g_loss`` (G's objective, in every iteration where G steps),
    ``d_loss`` (D's loss, in every iteration where D steps), ``loss`` (for MONAI's handlers: ``g_loss``, except in
    the D-only phase, where it is ``d_loss``), ``l2``, ``g_adv``, ``minimax_value`` (V(G, D)), ``d_real`` (mean
    D(x)), ``d_fake`` (mean D(G(x))), ``update_g``/``update_d`` and the ``phase`` name.
    Values not computed in a phase are ``nan`` so curves show gaps instead of stale numbers.

    Args:
        g_loss_function: the joint generator loss (λ_L2 · border-weighted L2 + λ_adv · adversarial);
            defaults to :class:`cxr_monai.apps.inpainting.ContextEncoderLoss` with the paper's 0.998 / 0.002.
        d_loss_function: :class:`cxr_monai.losses.AdversarialBCELoss` (BCE on logits).
        schedule: the :class:`GanSchedule`.
        amp: mixed precision on the engine's device: ``torch.autocast(device.type, **amp_kwargs)`` around the
            forward passes (float16 on CUDA, bfloat16 on a CPU, unless ``amp_kwargs`` names a ``dtype``), and
            gradient scaling (``g_scaler``/``d_scaler``) when that dtype is float16. The bundle turns it on with
            CUDA only (``use_amp``, dtype ``amp_dtype``); a CPU run with float16 exercises the same code.
        channels_last: use channels-last memory format (effective on CUDA with AMP).
        Other arguments as :class:`monai.engines.AdversarialTrainer`.
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
        epoch_length: int | None = None,
        prepare_batch: Callable | None = None,
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        amp: bool = False,
        channels_last: bool = False,
        non_blocking: bool = True,
        optim_set_to_none: bool = True,
        decollate: bool = False,
        **kwargs: Any,
    ) -> None:
        g_loss_function = g_loss_function or ContextEncoderLoss()
        d_loss_function = d_loss_function or AdversarialBCELoss()
        self.channels_last = channels_last
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            g_network=g_network,
            g_optimizer=g_optimizer,
            g_loss_function=g_loss_function,
            recon_loss_function=g_loss_function.l2_loss,
            d_network=d_network,
            d_optimizer=d_optimizer,
            d_loss_function=d_loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch or InpaintingBatch(),
            train_handlers=train_handlers,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            amp=False,  # the parent would make deprecated CUDA-only scalers; ours are made below
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            **kwargs,
        )
        self.schedule = schedule or GanSchedule()
        self.amp = bool(amp)
        if self.amp and self.amp_dtype() not in (torch.float16, torch.bfloat16):
            # torch.autocast only warns and runs in float32 for other dtypes
            raise ValueError(f"amp_kwargs dtype {self.amp_dtype()} is not a mixed-precision dtype; use "
                             "torch.float16 or torch.bfloat16.")
        # A disabled GradScaler is a no-op, so the same iteration runs with and without AMP.
        device_type = torch.device(device).type
        use_scaler = self.amp and self.amp_dtype() == torch.float16
        self.state.g_scaler = torch.amp.GradScaler(device_type, enabled=use_scaler)
        self.state.d_scaler = torch.amp.GradScaler(device_type, enabled=use_scaler)
        if self.channels_last:
            g_network.to(memory_format=torch.channels_last)
            d_network.to(memory_format=torch.channels_last)

    def run(self) -> None:  # type: ignore[override]
        """Train (continuing from the current state if called again), as :meth:`monai.engines.Trainer.run`."""
        # Skips Trainer.run, whose only addition is a CUDA-only `self.scaler` this engine never uses (its
        # g_scaler/d_scaler live in the state); on a CPU with AMP that scaler would only warn.
        Workflow.run(self)

    def _complete_state_dict_user_keys(self) -> None:
        # The engine's own state_dict stays counters only (iteration, epoch_length, max_epochs): networks,
        # optimisers and scalers are checkpointed as separate objects, so checkpoints hold tensors and numbers
        # only and load with torch.load(weights_only=True).
        return

    def amp_dtype(self) -> torch.dtype:
        """The dtype autocast runs the networks in when ``amp`` is set (``amp_kwargs['dtype']`` or the device's)."""
        device_type = torch.device(self.state.device).type
        return self.amp_kwargs.get("dtype") or torch.get_autocast_dtype(device_type)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(torch.device(self.state.device).type, **self.amp_kwargs)
        return contextlib.nullcontext()

    def _iteration(self, engine: ContextEncoderTrainer, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        memory_format = torch.channels_last if engine.channels_last else torch.contiguous_format
        masked, target, *rest = engine.prepare_batch(
            batchdata, engine.state.device, engine.non_blocking, memory_format=memory_format, **engine.to_kwargs
        )
        weight = rest[0] if rest else None
        state = engine.state
        g_net, d_net = state.g_network, state.d_network
        update_g, update_d = engine.schedule.updates(state.epoch, state.iteration)
        phase = engine.schedule.phase(state.epoch)
        nan = float("nan")
        out: dict[str, Any] = {
            CommonKeys.IMAGE: masked,
            CommonKeys.LABEL: target,
            "phase": phase.value,
            "update_g": update_g,
            "update_d": update_d,
            "l2": nan,
            "g_adv": nan,
            "g_loss": nan,
            "d_loss": nan,
            "minimax_value": nan,
            "d_real": nan,
            "d_fake": nan,
        }
        state.output = out

        # Both nets stay in train mode (batch statistics) as in Pathak's and the seed's code; a frozen net is
        # simply not stepped.
        g_net.train()
        d_net.train()
        if update_g:
            g_net.zero_grad(set_to_none=engine.optim_set_to_none)
            with engine._autocast():
                fake = g_net(masked)
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                fake_logits_for_g = d_net(fake).float() if phase is GanPhase.JOINT else None
                g_loss = state.g_loss_function(fake.float(), target.float(), fake_logits_for_g, weight)
            state.g_scaler.scale(g_loss.total).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            state.g_scaler.step(state.g_optimizer)
            state.g_scaler.update()
            d_net.zero_grad(set_to_none=True)  # the joint G step also filled D's grads; they belong to no step
            out["l2"] = g_loss.l2.item()
            if fake_logits_for_g is not None:
                out["g_adv"] = g_loss.adversarial.item()
            out["g_loss"] = out[CommonKeys.LOSS] = g_loss.total.item()
        else:
            with torch.no_grad(), engine._autocast():
                fake = g_net(masked)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            out["l2"] = float(state.recon_loss_function(fake.float(), target.float(), weight).item())
        fake = fake.detach()
        out[CommonKeys.PRED] = fake
        out[AdversarialKeys.FAKES] = fake
        out[AdversarialKeys.REALS] = target

        if update_d:
            # One backward per forward (real, then inpainted), as in Pathak's code: BatchNorm sees unmixed
            # batches, and DistributedDataParallel sees the forward/backward pairing it expects.
            d_net.zero_grad(set_to_none=engine.optim_set_to_none)
            adversarial = state.d_loss_function
            with engine._autocast():
                real_logits = d_net(target).float()
                d_loss_real = adversarial(real_logits, True)
            state.d_scaler.scale(d_loss_real).backward()
            with engine._autocast():
                fake_logits = d_net(fake).float()
                d_loss_fake = adversarial(fake_logits, False)
            state.d_scaler.scale(d_loss_fake).backward()
            state.d_scaler.step(state.d_optimizer)
            state.d_scaler.update()
            d_loss = d_loss_real.detach() + d_loss_fake.detach()
            out["d_loss"] = d_loss.item()
            if phase is GanPhase.D_ONLY:  # G never steps there; in the joint phase `loss` stays G's objective
                out[CommonKeys.LOSS] = out["d_loss"]
            out.update({k: v.item() for k, v in gan_diagnostics(real_logits, fake_logits).items()})
        if CommonKeys.LOSS not in out:
            out[CommonKeys.LOSS] = nan  # G did not step this iteration (balancing, g_every > 1)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out
