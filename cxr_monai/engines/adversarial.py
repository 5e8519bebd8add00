"""One phased adversarial trainer for every GAN of the project (context encoder, bone suppression, pix2pix).

One iteration, given a batch ``(inputs, target, *extras)`` from ``prepare_batch``:

* **G step** (phases ``g_l2`` and ``joint``): ``fake = G(inputs)``; the generator loss is
  ``g_loss_function(fake, target, fake_logits, *extras)``, where ``fake_logits = D(discriminator_input(inputs,
  fake))`` in the joint phase and ``None`` in the reconstruction-only warm-up.
* **D step** (phases ``d_only`` and ``joint``): ``d_loss(D(discriminator_input(inputs, target)), real) +
  d_loss(D(discriminator_input(inputs, fake.detach())), fake)``, one backward per forward.

What D sees is a hook: the target alone (the context encoder's D judges the inpainted centre) or, with
:func:`conditional_pair`, the input and the image together (a conditional GAN: pix2pix, bone suppression). A
discriminator may return one logit tensor or a list of them (multi-scale discriminators); the losses of
:mod:`cxr_monai.losses.adversarial` average over the list. Extra generator terms (L1, SSIM, ...) live in the
generator loss, which returns its total and named terms; ``term_names`` says which terms become scalars of the
output under which names. Phases and update-every-k come from :class:`~cxr_monai.engines.GanSchedule`, functions of
the engine's counters, so a resumed run continues exactly where it stopped; AMP runs with one gradient scaler per
network (``g_scaler``/``d_scaler`` in the state, checkpointed with the networks).
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

from cxr_monai.engines.gan_schedule import GanPhase, GanSchedule
from cxr_monai.losses.adversarial import AdversarialBCELoss, gan_diagnostics

__all__ = ["PhasedAdversarialTrainer", "conditional_pair", "loss_terms"]

Logits = torch.Tensor | Sequence[torch.Tensor]


def conditional_pair(inputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """What a conditional discriminator sees: the generator's input and a real or generated image, as channels.

    >>> conditional_pair(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)).shape
    torch.Size([2, 2, 8, 8])
    """
    if inputs.shape[2:] != images.shape[2:]:
        raise ValueError(f"a conditional discriminator needs the input and the image at one size, got "
                         f"{tuple(inputs.shape)} and {tuple(images.shape)}")
    return torch.cat([inputs, images.to(inputs.dtype)], dim=1)


def _image_only(inputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return images


def _float(logits: Logits) -> Logits:
    return logits.float() if isinstance(logits, torch.Tensor) else [scale.float() for scale in logits]


def loss_terms(loss: Any) -> dict[str, torch.Tensor]:
    """The named terms of a generator loss's output: a ``NamedTuple`` or a mapping, ``total`` included.

    >>> sorted(loss_terms({"total": torch.tensor(1.0), "l1": torch.tensor(0.5)}))
    ['l1', 'total']
    """
    if hasattr(loss, "_asdict"):
        terms = dict(loss._asdict())
    elif isinstance(loss, Mapping):
        terms = dict(loss)
    else:
        raise TypeError(f"a generator loss must return a NamedTuple or a mapping with 'total', got {type(loss)}")
    if "total" not in terms:
        raise KeyError(f"the generator loss returned no 'total' (terms: {sorted(terms)})")
    return terms


class PhasedAdversarialTrainer(AdversarialTrainer):
    """GAN trainer with phases, update-every-k, conditional or plain D, AMP scalers, on MONAI's AdversarialTrainer.

    MONAI's trainer gives the handlers, events, metrics and state; this class replaces its iteration (see the
    module docstring). ``engine.state.output`` holds tensors (``image`` = G's input, ``label`` = target, ``pred``
    = G's output) and plain floats for logging: ``g_loss`` (when G steps), ``d_loss`` (when D steps), ``loss`` (for
    MONAI's handlers: ``g_loss``, except in the D-only phase, where it is ``d_loss``), the generator terms named by
    ``term_names``, ``minimax_value`` (V(G, D)), ``d_real``/``d_fake`` (mean D(x) / D(G(x)); with hinge logits
    too, as sigmoids of the logits), ``update_g``/``update_d`` and the ``phase`` name. Values not computed in an
    iteration are ``nan`` so curves show gaps instead of stale numbers.

    Args:
        g_loss_function: ``(fake, target, fake_logits or None, *extras) -> NamedTuple or mapping`` with ``total``
            and named terms (e.g. :class:`~cxr_monai.apps.inpainting.ContextEncoderLoss`). With ``fake_logits`` None
            (the reconstruction-only phase, and iterations where G does not step) it must not need D.
        d_loss_function: ``(logits, target_is_real) -> loss`` (:class:`~cxr_monai.losses.AdversarialBCELoss` or
            :class:`~cxr_monai.losses.AdversarialHingeLoss`).
        schedule: the :class:`GanSchedule` (default: joint from the first epoch, both nets every iteration).
        discriminator_input: ``(inputs, images) -> D's input``; default the images alone; :func:`conditional_pair`
            for a conditional GAN.
        term_names: generator-loss term -> output key, for the terms worth a curve (default: every term but
            ``total``, under its own name). The term named ``adversarial_term`` is reported only when D judged G.
        adversarial_term: the name of the generator loss's adversarial term.
        amp: mixed precision on the engine's device: ``torch.autocast(device.type, **amp_kwargs)`` around the
            forward passes (float16 on CUDA, bfloat16 on a CPU, unless ``amp_kwargs`` names a ``dtype``), with
            gradient scaling when that dtype is float16.
        channels_last: channels-last memory format for the networks and the batches (effective on CUDA with AMP).
        Other arguments as :class:`monai.engines.AdversarialTrainer`.

    Example::

        trainer = PhasedAdversarialTrainer(
            "cuda", 100, loader, generator, g_opt, discriminator, d_opt,
            g_loss_function=PairedGeneratorLoss(lambda_l1=100.0), d_loss_function=AdversarialHingeLoss(),
            discriminator_input=conditional_pair, term_names={"l1": "l1", "adversarial": "g_adv"},
            prepare_batch=KeyedBatch("image", "target"))
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
        g_loss_function: Callable[..., Any],
        d_loss_function: Callable[[Logits, bool], torch.Tensor] | None = None,
        schedule: GanSchedule | None = None,
        discriminator_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        term_names: Mapping[str, str] | None = None,
        adversarial_term: str = "adversarial",
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
        d_loss_function = d_loss_function or AdversarialBCELoss()
        self.channels_last = channels_last
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            g_network=g_network,
            g_optimizer=g_optimizer,
            g_loss_function=g_loss_function,
            recon_loss_function=g_loss_function,  # stored by the parent only; this iteration calls g_loss_function
            d_network=d_network,
            d_optimizer=d_optimizer,
            d_loss_function=d_loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch or _required_prepare_batch,
            train_handlers=train_handlers,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            amp=False,  # the parent would make deprecated CUDA-only scalers; ours are made below
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            **kwargs,
        )
        self.schedule = schedule or GanSchedule(g_l2_epochs=0, d_only_epochs=0)
        self.discriminator_input = discriminator_input or _image_only
        self.term_names = dict(term_names) if term_names is not None else None
        self.adversarial_term = adversarial_term
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

    def _log_terms(self, out: dict[str, Any], loss: Any, judged: bool) -> None:
        for name, value in loss_terms(loss).items():
            key = name if self.term_names is None else self.term_names.get(name)
            if key is None or name == "total" or (name == self.adversarial_term and not judged):
                continue
            out[key] = float(value.detach().item())

    def _iteration(self, engine: PhasedAdversarialTrainer, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        memory_format = torch.channels_last if engine.channels_last else torch.contiguous_format
        inputs, target, *extras = engine.prepare_batch(
            batchdata, engine.state.device, engine.non_blocking, memory_format=memory_format, **engine.to_kwargs
        )
        state = engine.state
        g_net, d_net = state.g_network, state.d_network
        update_g, update_d = engine.schedule.updates(state.epoch, state.iteration)
        phase = engine.schedule.phase(state.epoch)
        d_view = engine.discriminator_input
        nan = float("nan")
        out: dict[str, Any] = {
            CommonKeys.IMAGE: inputs,
            CommonKeys.LABEL: target,
            "phase": phase.value,
            "update_g": update_g,
            "update_d": update_d,
            **dict.fromkeys(engine.term_names.values() if engine.term_names is not None else (), nan),
            "g_loss": nan,
            "d_loss": nan,
            "minimax_value": nan,
            "d_real": nan,
            "d_fake": nan,
        }
        state.output = out

        # Both nets stay in train mode (batch statistics) as in Pathak's and pix2pix's code; a frozen net is
        # simply not stepped.
        g_net.train()
        d_net.train()
        if update_g:
            g_net.zero_grad(set_to_none=engine.optim_set_to_none)
            with engine._autocast():
                fake = g_net(inputs)
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                judged = phase is GanPhase.JOINT
                fake_logits_for_g = _float(d_net(d_view(inputs, fake))) if judged else None
                g_loss = state.g_loss_function(fake.float(), target.float(), fake_logits_for_g, *extras)
            total = loss_terms(g_loss)["total"]
            state.g_scaler.scale(total).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            state.g_scaler.step(state.g_optimizer)
            state.g_scaler.update()
            d_net.zero_grad(set_to_none=True)  # the joint G step also filled D's grads; they belong to no step
            engine._log_terms(out, g_loss, judged)
            out["g_loss"] = out[CommonKeys.LOSS] = total.item()
        else:
            with torch.no_grad(), engine._autocast():
                fake = g_net(inputs)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            with torch.no_grad():  # the reconstruction terms, for the curves
                engine._log_terms(out, state.g_loss_function(fake.float(), target.float(), None, *extras), False)
        fake = fake.detach()
        out[CommonKeys.PRED] = fake
        out[AdversarialKeys.FAKES] = fake
        out[AdversarialKeys.REALS] = target

        if update_d:
            # One backward per forward (real, then generated), as in Pathak's code: BatchNorm sees unmixed
            # batches, and DistributedDataParallel sees the forward/backward pairing it expects.
            d_net.zero_grad(set_to_none=engine.optim_set_to_none)
            adversarial = state.d_loss_function
            with engine._autocast():
                real_logits = _float(d_net(d_view(inputs, target)))
                d_loss_real = adversarial(real_logits, True)
            state.d_scaler.scale(d_loss_real).backward()
            with engine._autocast():
                fake_logits = _float(d_net(d_view(inputs, fake)))
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


def _required_prepare_batch(*args: Any, **kwargs: Any) -> None:
    raise ValueError("PhasedAdversarialTrainer needs a prepare_batch that returns (inputs, target, *extras), "
                     "e.g. cxr_monai.engines.KeyedBatch('image', 'target')")
