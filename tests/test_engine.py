"""Context-encoder trainer: schedule, one iteration per phase, checkpoint/resume, NaN guard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import warm_processes
from ignite.engine import Engine, Events

from cxr_monai.apps.inpainting import ContextEncoderTrainer, border_weight_map
from cxr_monai.engines import GanPhase, GanSchedule
from cxr_monai.handlers import (
    NanGuard,
    ResumableCheckpoint,
    atomic_torch_save,
    latest_checkpoint,
)
from cxr_monai.networks import ContextDiscriminator, ContextEncoder


def _batches(n_batches: int, batch_size: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        patch = torch.rand(batch_size, 1, 128, 128, generator=g)  # [0, 1], as the transforms give
        masked = patch.clone()
        masked[..., 32:96, 32:96] = 0.5
        weight = torch.as_tensor(border_weight_map()).expand(batch_size, 1, 64, 64)
        out.append({"masked": masked, "target": patch[..., 32:96, 32:96].clone(), "weight": weight})
    return out


def _trainer(data, max_epochs=3, schedule=None, handlers=None, lr=2e-4, **kwargs):
    torch.manual_seed(0)
    g = ContextEncoder(base_channels=8, bottleneck_channels=32)
    d = ContextDiscriminator(base_channels=8)
    return ContextEncoderTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=data,
        g_network=g,
        g_optimizer=torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999)),
        d_network=d,
        d_optimizer=torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999)),
        schedule=schedule or GanSchedule(g_l2_epochs=1, d_only_epochs=1),
        train_handlers=handlers,
        **kwargs,
    )


def test_channels_last_trains_the_same_as_contiguous():
    """The GPU path's memory format, checked on the CPU: conv weights go channels-last, losses agree."""
    losses = {}
    for channels_last in (False, True):
        trainer = _trainer(_batches(2), max_epochs=3, channels_last=channels_last)
        seen = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
        trainer.run()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for network in (trainer.state.g_network, trainer.state.d_network):  # a weight with C_in > 1 tells them apart
            weight = next(p for p in network.parameters() if p.ndim == 4 and min(p.shape[1:]) > 1)
            assert weight.is_contiguous(memory_format=fmt) and not weight.is_contiguous(
                memory_format=torch.contiguous_format if channels_last else torch.channels_last)
        losses[channels_last] = [[out[key] for key in ("l2", "d_loss")] for out in seen]
    assert len(losses[True]) == 6
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-3, atol=1e-5,
                               equal_nan=True)


def _amp_run(trainer, checkpoint_dir=None):
    """Run ``trainer``; returns the ``(l2, d_loss, g_adv)`` of each iteration and the dtypes G's forwards gave."""
    outputs, seen = [], []
    trainer.state.g_network.register_forward_hook(lambda module, args, output: outputs.append(output.dtype))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    if checkpoint_dir is not None:
        ResumableCheckpoint(checkpoint_dir, state_attributes=["g_network", "g_scaler", "d_scaler"]).attach(trainer)
    trainer.run()
    return torch.tensor([[out[key] for key in ("l2", "d_loss", "g_adv")] for out in seen]), set(outputs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_amp_iteration_on_the_cpu(tmp_path, dtype):
    """The GPU's AMP path run on the CPU: forwards autocast to ``dtype``, float16 steps go through enabled grad
    scalers whose state is checkpointed, the weights stay float32 and every phase's losses track float32's."""
    reference, _ = _amp_run(_trainer(_batches(2), max_epochs=3))
    trainer = _trainer(_batches(2), max_epochs=3, amp=True, amp_kwargs={"dtype": dtype})
    scaled = dtype == torch.float16
    assert trainer.state.g_scaler.is_enabled() == scaled and trainer.state.d_scaler.is_enabled() == scaled
    if scaled:  # a scale at which these nets' float16 gradients do not overflow: no step is skipped
        for name in ("g_scaler", "d_scaler"):
            setattr(trainer.state, name, torch.amp.GradScaler("cpu", init_scale=1024.0))
    losses, forward_dtypes = _amp_run(trainer, tmp_path)
    assert forward_dtypes == {dtype}
    assert all(p.dtype == torch.float32 for p in trainer.state.g_network.parameters())
    saved = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert (saved["g_scaler"] != {}) == scaled and (saved["d_scaler"] != {}) == scaled
    assert losses.shape == (6, 3) and torch.isfinite(losses).sum() == torch.isfinite(reference).sum() == 12
    # bfloat16 keeps 8 bits of mantissa and D's steps compound it; a skipped or mis-scaled step is off by far more
    torch.testing.assert_close(losses, reference, rtol=0.1, atol=1e-3, equal_nan=True)


def test_amp_refuses_a_dtype_autocast_would_ignore():
    with pytest.raises(ValueError, match="not a mixed-precision dtype"):
        _trainer(_batches(1), amp=True, amp_kwargs={"dtype": torch.float32})


def test_float16_overflow_skips_the_step_and_halves_the_scale():
    """At GradScaler's default 2**16 the discriminator's float16 gradients overflow: those D steps are skipped
    (D unchanged, the same batch scores the same) and the scale halves until it fits, as it would on a GPU."""
    trainer = _trainer(_batches(2), max_epochs=3, amp=True, amp_kwargs={"dtype": torch.float16},
                       schedule=GanSchedule(g_l2_epochs=1, d_only_epochs=2))
    scales = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: scales.append(e.state.d_scaler.get_scale()))
    losses, _ = _amp_run(trainer)
    d_losses, skipped = losses[2:, 1], [a > b for a, b in zip([65536.0, *scales[2:]], scales[2:])]
    assert skipped[:2] == [True, True] and all(torch.isfinite(d_losses))
    for i in range(2, len(d_losses)):  # batch i and i - 2 are the same; D only changed if a step between ran
        if skipped[i - 2] and skipped[i - 1]:
            assert d_losses[i] == d_losses[i - 2]
    assert all(torch.isfinite(p).all() for p in trainer.state.d_network.parameters())


def test_schedule_phases_and_balancing():
    s = GanSchedule(g_l2_epochs=2, d_only_epochs=4, g_every=2, d_every=1)
    assert [s.phase(e) for e in (1, 2, 3, 6, 7, 90)] == [GanPhase.G_L2] * 2 + [GanPhase.D_ONLY] * 2 + [
        GanPhase.JOINT
    ] * 2
    assert s.updates(1, 1) == (True, False)  # G-L2 phase: G only, every iteration
    assert s.updates(3, 5) == (False, True)  # D-only phase
    assert s.updates(7, 1) == (False, True) and s.updates(7, 2) == (True, True)  # G every 2nd iteration
    with pytest.raises(ValueError, match="g_every"):
        GanSchedule(g_every=0)


def test_each_phase_updates_only_its_networks():
    data = _batches(2)
    trainer = _trainer(data, max_epochs=3)
    g, d = trainer.state.g_network, trainer.state.d_network
    snapshots = {}

    def snapshot(engine):
        snapshots[engine.state.epoch] = (
            [p.detach().clone() for p in g.parameters()],
            [p.detach().clone() for p in d.parameters()],
            dict(engine.state.output),
        )

    g0 = [p.detach().clone() for p in g.parameters()]
    d0 = [p.detach().clone() for p in d.parameters()]
    trainer.add_event_handler(Events.EPOCH_COMPLETED, snapshot)
    trainer.run()

    def changed(a, b):
        return any(not torch.equal(x, y) for x, y in zip(a, b))

    g1, d1, out1 = snapshots[1]
    assert changed(g0, g1) and not changed(d0, d1)  # epoch 1: G with L2 only
    assert math.isnan(out1["d_loss"]) and math.isnan(out1["g_adv"]) and math.isfinite(out1["l2"])
    g2, d2, out2 = snapshots[2]
    assert not changed(g1, g2) and changed(d1, d2)  # epoch 2: D only
    assert math.isfinite(out2["d_loss"]) and 0.0 < out2["d_real"] < 1.0 and out2["minimax_value"] < 0
    g3, d3, out3 = snapshots[3]
    assert changed(g2, g3) and changed(d2, d3)  # epoch 3: joint
    assert math.isfinite(out3["g_adv"])
    assert out3["loss"] == pytest.approx(0.998 * out3["l2"] + 0.002 * out3["g_adv"], rel=1e-4)


def test_loss_is_g_objective_in_the_joint_phase_even_when_g_skips():
    """With g_every=2 the joint phase's ``loss`` is G's objective or nan, never D's loss (one curve, one meaning)."""
    trainer = _trainer(_batches(4), max_epochs=3, schedule=GanSchedule(g_l2_epochs=1, d_only_epochs=1, g_every=2))
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    d_only, joint = outputs[4:8], outputs[8:]
    assert all(o["loss"] == o["d_loss"] for o in d_only)
    assert [o["update_g"] for o in joint] == [False, True, False, True]
    for o in joint:
        expected = 0.998 * o["l2"] + 0.002 * o["g_adv"] if o["update_g"] else float("nan")
        assert o["loss"] == pytest.approx(expected, rel=1e-4, nan_ok=True)


def test_l2_warmup_reduces_reconstruction_loss():
    data = _batches(1, batch_size=8)
    trainer = _trainer(data, max_epochs=30, schedule=GanSchedule(g_l2_epochs=30, d_only_epochs=0), lr=1e-3)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["l2"]))
    trainer.run()
    assert losses[-1] < 0.5 * losses[0]


def test_resume_continues_to_the_same_iteration_count(tmp_path):
    data = _batches(5)
    trainer = _trainer(data, max_epochs=3)
    ckpt = ResumableCheckpoint(
        tmp_path / "ckpt",
        {"generator": trainer.state.g_network, "discriminator": trainer.state.d_network,
         "g_optimizer": trainer.state.g_optimizer, "d_optimizer": trainer.state.d_optimizer},
        save_every=3,
        model_path=tmp_path / "models" / "model.pt",
        model_key="generator",
    )
    ckpt.attach(trainer)

    def stop_at_7(engine):
        if engine.state.iteration == 7:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, stop_at_7)
    trainer.run()
    assert latest_checkpoint(tmp_path / "ckpt").name == "checkpoint_6.pt"  # 3, 5 (epoch end), 6
    saved = torch.load(latest_checkpoint(tmp_path / "ckpt"), weights_only=True)
    assert saved["engine"]["iteration"] == 6

    resumed = _trainer(data, max_epochs=3)
    ckpt2 = ResumableCheckpoint(
        tmp_path / "ckpt",
        {"generator": resumed.state.g_network, "discriminator": resumed.state.d_network,
         "g_optimizer": resumed.state.g_optimizer, "d_optimizer": resumed.state.d_optimizer},
        save_every=3,
    )
    ckpt2.attach(resumed)
    iterations = []
    resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    resumed.run()
    assert ckpt2.resumed_from.name == "checkpoint_6.pt"
    assert iterations == list(range(7, 16)) and resumed.state.epoch == 3
    generator_weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(generator_weights) == set(resumed.state.g_network.state_dict())


def _run_until(trainer, iteration):
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), lambda e: e.terminate())
    trainer.run()


def test_fresh_start_sets_old_checkpoints_aside_and_resume_keeps_pruning(tmp_path):
    """resume=False never leaves an earlier run's checkpoints to be resumed later; n_saved counts files on disk."""
    attributes = ["g_network", "g_optimizer"]
    old = _trainer(_batches(4), max_epochs=3)
    ResumableCheckpoint(tmp_path, state_attributes=attributes, save_every=2).attach(old)
    old.run()
    assert [p.name for p in sorted(tmp_path.glob("checkpoint_*.pt"))] == ["checkpoint_10.pt", "checkpoint_12.pt"]

    fresh = _trainer(_batches(4), max_epochs=3)
    ResumableCheckpoint(tmp_path, state_attributes=attributes, save_every=2, resume=False).attach(fresh)
    _run_until(fresh, 5)  # killed mid-run
    assert latest_checkpoint(tmp_path).name == "checkpoint_4.pt"
    [previous] = tmp_path.glob("previous_*")
    assert sorted(p.name for p in previous.iterdir()) == ["checkpoint_10.pt", "checkpoint_12.pt"]

    resumed = _trainer(_batches(4), max_epochs=3)
    ckpt = ResumableCheckpoint(tmp_path, state_attributes=attributes, save_every=2)
    ckpt.attach(resumed)
    resumed.run()
    assert ckpt.resumed_from.name == "checkpoint_4.pt" and resumed.state.iteration == 12
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_10.pt", "checkpoint_12.pt"]


def test_resumed_finished_run_rewrites_model_pt_and_removes_temporary_files(tmp_path, caplog):
    """Killed during the final model.pt save: the old model.pt and the save's temporary files are left. The rerun
    finds training complete, so Ignite runs no epoch; the checkpoint handler writes model.pt from the last
    checkpoint and removes the leftovers."""
    model_path = tmp_path / "models" / "model.pt"
    first = _trainer(_batches(2), max_epochs=2)
    ResumableCheckpoint(tmp_path / "ckpt", state_attributes=["g_network", "g_optimizer"], model_path=model_path,
                        model_key="g_network").attach(first)
    first.run()
    final = {k: v.clone() for k, v in first.state.g_network.state_dict().items()}
    torch.save({"stale": torch.zeros(1)}, model_path)  # the epoch before's model, as the kill left it
    leftovers = [model_path.parent / ".model.pt.k3j2x9q1.tmp", tmp_path / "ckpt" / "tmpab12_xyz"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    kept = tmp_path / "ckpt" / "tmp_notes.txt"  # not a temporary file of a save: left alone
    kept.write_text("mine")

    rerun = _trainer(_batches(2), max_epochs=2)
    ResumableCheckpoint(tmp_path / "ckpt", state_attributes=["g_network", "g_optimizer"], model_path=model_path,
                        model_key="g_network").attach(rerun)
    iterations = []
    rerun.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    with caplog.at_level("INFO"):
        rerun.run()
    assert iterations == [] and rerun.state.iteration == 4
    written = torch.load(model_path, weights_only=True)
    assert set(written) == set(final) and all(torch.equal(written[k], final[k]) for k in final)
    assert not any(path.exists() for path in leftovers) and kept.exists()
    assert any("already complete at iteration 4" in message for message in caplog.messages)


@pytest.mark.parametrize("resume", ["false", "False", "0", 0])
def test_resume_false_from_the_command_line_means_false(tmp_path, resume):
    """``python -m monai.bundle run --resume false`` passes the string 'false' (Python Fire)."""
    old = _trainer(_batches(2), max_epochs=1)
    ResumableCheckpoint(tmp_path, state_attributes=["g_network"]).attach(old)
    old.run()
    fresh = _trainer(_batches(2), max_epochs=1)
    ckpt = ResumableCheckpoint(tmp_path, state_attributes=["g_network"], resume=resume)
    ckpt.attach(fresh)
    fresh.run()
    assert ckpt.resumed_from is None and fresh.state.iteration == 2 and len(list(tmp_path.glob("previous_*"))) == 1
    with pytest.raises(ValueError, match="resume must be true or false"):
        ResumableCheckpoint(tmp_path, state_attributes=["g_network"], resume="nope")


def test_outputs_name_the_generator_and_discriminator_losses_in_every_phase():
    """``g_loss`` is G's objective whenever G steps, ``d_loss`` D's whenever D steps; ``loss`` stays MONAI's."""
    trainer = _trainer(_batches(2), max_epochs=3, schedule=GanSchedule(g_l2_epochs=1, d_only_epochs=1))
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert [o["phase"] for o in outputs] == ["g_l2"] * 2 + ["d_only"] * 2 + ["joint"] * 2
    for o in outputs:
        assert math.isfinite(o["g_loss"]) == o["update_g"] and math.isfinite(o["d_loss"]) == o["update_d"]
        assert o["loss"] == (o["d_loss"] if o["phase"] == "d_only" else o["g_loss"])
    from cxr_monai.apps.inpainting import context_encoder_scalars

    assert [context_encoder_scalars(o)["phase"] for o in outputs] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert "g_loss" not in context_encoder_scalars(outputs[2]) and "d_loss" not in context_encoder_scalars(outputs[0])


def test_resume_with_another_epoch_length_keeps_the_checkpoints_and_says_so(tmp_path, caplog):
    """Resumed on another GPU count (here: a loader of 4 batches instead of 2), the run keeps the epoch length its
    schedule was planned with, finishes the planned iterations and warns with both lengths."""
    first = _trainer(_batches(2), max_epochs=3)
    ResumableCheckpoint(tmp_path, state_attributes=["g_network", "g_optimizer"], save_every=1).attach(first)
    _run_until(first, 3)  # killed in its second epoch

    resumed = _trainer(_batches(4), max_epochs=3)
    ResumableCheckpoint(tmp_path, state_attributes=["g_network", "g_optimizer"]).attach(resumed)
    with caplog.at_level("WARNING"):
        resumed.run()
    assert resumed.state.epoch_length == 2 and resumed.state.iteration == 6
    assert any("of 2 iterations an epoch; this one's data gives 4" in m for m in caplog.messages)


def test_resume_with_amp_from_a_run_without_it(tmp_path, caplog):
    """A checkpoint's disabled grad scalers ({}) do not stop a run resumed with AMP (an enabled scaler)."""
    scalers = ["g_scaler", "d_scaler"]
    first = _trainer(_batches(2), max_epochs=1)
    ResumableCheckpoint(tmp_path, state_attributes=["g_network", "g_optimizer", *scalers]).attach(first)
    first.run()
    assert torch.load(latest_checkpoint(tmp_path), weights_only=True)["g_scaler"] == {}

    resumed = _trainer(_batches(2), max_epochs=2, amp=True, amp_kwargs={"dtype": torch.float16})
    ckpt = ResumableCheckpoint(tmp_path, state_attributes=["g_network", "g_optimizer", *scalers])
    ckpt.attach(resumed)
    resumed.add_event_handler(Events.STARTED, lambda e: e.terminate())
    with caplog.at_level("INFO"):
        resumed.run()
    assert ckpt.resumed_from.name == "checkpoint_2.pt" and resumed.state.iteration == 2
    assert resumed.state.g_scaler.is_enabled() and resumed.state.g_scaler.get_scale() == 2.0**16
    assert any("'g_scaler' was saved without AMP" in message for message in caplog.messages)


def test_atomic_save_is_readable_by_others_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "models" / "model.pt"
    atomic_torch_save({"w": torch.ones(2)}, path)
    assert path.stat().st_mode & 0o044 == 0o044 and torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    with pytest.raises(Exception):
        atomic_torch_save({"bad": lambda: None}, path)  # a lambda cannot be pickled
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_checkpoint_refuses_non_finite_weights(tmp_path):
    """Weights poisoned while every loss was finite (e.g. a step on infinite gradients) never reach a checkpoint."""
    trainer = _trainer(_batches(4), max_epochs=1)

    def poison(engine):
        if engine.state.iteration == 2:
            with torch.no_grad():
                next(engine.state.g_network.parameters())[0] = float("inf")

    trainer.add_event_handler(Events.ITERATION_COMPLETED, poison)  # runs before the checkpoint handler
    ResumableCheckpoint(tmp_path, state_attributes=["g_network"], save_every=1).attach(trainer)
    with pytest.raises(FloatingPointError, match=r"non-finite weights in 'g_network' at iteration 2.*checkpoint_1\.pt"):
        trainer.run()
    assert latest_checkpoint(tmp_path).name == "checkpoint_1.pt"


def _nan_guard_rank(rank: int, world_size: int, init_file: str, results: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        def step(engine, batch):  # rank 1's loss goes NaN at the second iteration, rank 0's never does
            return {"loss": float("nan") if (rank, engine.state.iteration) == (1, 2) else 1.0}

        engine = Engine(step)
        NanGuard(["loss"]).attach(engine)
        try:
            engine.run(range(4), max_epochs=1)
            outcome = f"finished at {engine.state.iteration}"
        except FloatingPointError as error:
            outcome = f"stopped at {engine.state.iteration}: {error}"
        Path(results, f"rank{rank}.txt").write_text(outcome)
    finally:
        torch.distributed.destroy_process_group()


def _fresh_start_rank(rank: int, world_size: int, init_file: str, save_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        engine = Engine(lambda engine, batch: {"loss": 1.0})
        ResumableCheckpoint(save_dir, {"net": torch.nn.Linear(2, 2)}, save_every=1, resume=False).attach(engine)
        engine.run(range(3), max_epochs=1)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes under torch.distributed
def test_fresh_start_under_torch_distributed_moves_old_checkpoints_once(tmp_path):
    save_dir = tmp_path / "ckpt"
    save_dir.mkdir()
    for iteration in (7, 8):
        torch.save({"net": {}}, save_dir / f"checkpoint_{iteration}.pt")
    warm_processes.spawn(_fresh_start_rank, args=(2, str(tmp_path / "init"), str(save_dir)), nprocs=2)
    [previous] = save_dir.glob("previous_*")
    assert sorted(p.name for p in previous.iterdir()) == ["checkpoint_7.pt", "checkpoint_8.pt"]
    assert sorted(p.name for p in save_dir.glob("checkpoint_*.pt")) == ["checkpoint_2.pt", "checkpoint_3.pt"]


@pytest.mark.slow  # two processes under torch.distributed
def test_nan_guard_stops_every_rank_together(tmp_path):
    """One rank's NaN stops all ranks at that iteration (none goes on to checkpoint or hang at a collective)."""
    warm_processes.spawn(_nan_guard_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    rank0, rank1 = ((tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1))
    assert rank1.startswith("stopped at 2: non-finite loss at iteration 2") and "loss=nan" in rank1
    assert rank0.startswith("stopped at 2: non-finite loss at iteration 2") and "on another rank" in rank0


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    data = _batches(4)
    trainer = _trainer(data, max_epochs=1)
    NanGuard(["l2", "loss"], checkpoint_dir=tmp_path).attach(trainer)
    ResumableCheckpoint(tmp_path, {"generator": trainer.state.g_network}, save_every=1).attach(trainer)

    def poison(engine):
        if engine.state.iteration == 2:
            data[2]["target"][:] = float("nan")

    trainer.add_event_handler(Events.ITERATION_COMPLETED, poison)
    with pytest.raises(FloatingPointError, match=r"iteration 3 .*l2=nan.*checkpoint_2\.pt"):
        trainer.run()
    assert latest_checkpoint(tmp_path).name == "checkpoint_2.pt"


def test_load_network_weights_from_model_pt_or_a_checkpoint_key_and_clear_errors(tmp_path):
    from cxr_monai.handlers import load_network_weights

    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    assert load_network_weights(target, tmp_path / "model.pt") is target
    assert torch.equal(target.weight, source.weight)

    torch.save({"g_network": source.state_dict(), "d_network": torch.nn.Linear(2, 1).state_dict()},
               tmp_path / "checkpoint_4.pt")
    fresh = torch.nn.Linear(3, 2)
    load_network_weights(fresh, tmp_path / "checkpoint_4.pt", key="g_network")
    assert torch.equal(fresh.bias, source.bias)
    with pytest.raises(ValueError, match=r"checkpoint_4\.pt: is a checkpoint of several objects \(d_network, g"):
        load_network_weights(fresh, tmp_path / "checkpoint_4.pt")
    with pytest.raises(KeyError, match="has no 'network'; its keys: d_network, g_network"):
        load_network_weights(fresh, tmp_path / "checkpoint_4.pt", key="network")
    with pytest.raises(ValueError, match=r"model\.pt: does not fit Linear; .*size mismatch for weight"):
        load_network_weights(torch.nn.Linear(4, 2), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match=r"absent\.pt: no such weights file"):
        load_network_weights(target, tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt: not a weights file"):
        load_network_weights(target, tmp_path / "garbage.pt")


# ----------------------------------------------------------------------------------------------------------
# the generic phased trainer: a conditional GAN with a multi-scale discriminator and extra generator terms


class _PairedLoss(torch.nn.Module):
    """L1 to the target plus an adversarial term: the shape of a conditional GAN's generator loss."""

    def __init__(self, adversarial):
        super().__init__()
        self.adversarial = adversarial

    def forward(self, fake, target, fake_logits=None):
        l1 = (fake - target).abs().mean()
        adv = self.adversarial.generator_loss(fake_logits) if fake_logits is not None else torch.zeros(())
        return {"total": 100.0 * l1 + adv, "l1": l1, "adversarial": adv}


class _TwoScaleDiscriminator(torch.nn.Module):
    """Patch logits at full and half size, recording the channels it is shown."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 1, 3, padding=1)
        self.seen_channels: list[int] = []

    def forward(self, x):
        self.seen_channels.append(x.shape[1])
        return [self.conv(x), self.conv(torch.nn.functional.avg_pool2d(x, 2))]


def _paired_trainer(max_epochs=2, schedule=None, term_names=None, **kwargs):
    from cxr_monai.engines import KeyedBatch, PhasedAdversarialTrainer, conditional_pair
    from cxr_monai.losses import AdversarialHingeLoss

    torch.manual_seed(0)
    data = [{"image": torch.rand(2, 1, 16, 16), "target": torch.rand(2, 1, 16, 16)} for _ in range(3)]
    g = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1))
    d = _TwoScaleDiscriminator(in_channels=2)
    hinge = AdversarialHingeLoss()
    return PhasedAdversarialTrainer(
        "cpu", max_epochs, data, g, torch.optim.Adam(g.parameters(), 1e-4, betas=(0.0, 0.9)),
        d, torch.optim.Adam(d.parameters(), 4e-4, betas=(0.0, 0.9)),
        g_loss_function=_PairedLoss(hinge), d_loss_function=hinge, schedule=schedule,
        discriminator_input=conditional_pair, term_names=term_names, prepare_batch=KeyedBatch("image", "target"),
        **kwargs,
    )


def test_phased_trainer_runs_a_conditional_gan_with_a_multiscale_discriminator():
    trainer = _paired_trainer(term_names={"l1": "l1", "adversarial": "g_adv"})
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    d_before = trainer.state.d_network.conv.weight.detach().clone()
    trainer.run()
    assert len(seen) == 6 and all(out["phase"] == "joint" for out in seen)  # default schedule: joint throughout
    assert set(trainer.state.d_network.seen_channels) == {2}  # D sees input ⊕ image
    assert all(math.isfinite(out[key]) for out in seen for key in ("l1", "g_adv", "g_loss", "d_loss", "d_real"))
    assert seen[0]["g_loss"] == pytest.approx(100 * seen[0]["l1"] + seen[0]["g_adv"], rel=1e-5)
    assert not torch.equal(trainer.state.d_network.conv.weight, d_before)
    assert [group["lr"] for group in trainer.state.g_optimizer.param_groups] == [1e-4]  # TTUR: D faster than G
    assert [group["lr"] for group in trainer.state.d_optimizer.param_groups] == [4e-4]


def test_phased_trainer_logs_reconstruction_terms_in_the_warm_up_and_every_term_by_default():
    trainer = _paired_trainer(max_epochs=3, schedule=GanSchedule(g_l2_epochs=1, d_only_epochs=1))
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    warm_up, d_only, joint = seen[:3], seen[3:6], seen[6:]
    assert all(math.isfinite(out["l1"]) and "adversarial" not in out for out in warm_up)  # D did not judge G
    assert all(math.isfinite(out["l1"]) and math.isnan(out["g_loss"]) for out in d_only)  # G frozen: L1 still logged
    assert all(math.isfinite(out["adversarial"]) for out in joint)


def test_phased_trainer_needs_a_prepare_batch():
    from cxr_monai.engines import PhasedAdversarialTrainer

    g, d = torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 1)
    trainer = PhasedAdversarialTrainer("cpu", 1, [{"image": torch.zeros(1, 1, 4, 4)}], g,
                                       torch.optim.SGD(g.parameters(), 0.1), d, torch.optim.SGD(d.parameters(), 0.1),
                                       g_loss_function=lambda fake, target, logits: {"total": fake.mean()})
    with pytest.raises(ValueError, match="needs a prepare_batch"):
        trainer.run()


def _finish_rank(rank: int, world_size: int, init_file: str, results: str) -> None:
    import time

    from cxr_monai.utils import finish_distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    if rank == 0:
        time.sleep(1.0)  # rank 0 still validating and writing while rank 1 is done
    finish_distributed(timeout_s=60)
    Path(results, f"rank{rank}.txt").write_text(str(torch.distributed.is_initialized()))


@pytest.mark.slow  # two processes under torch.distributed
def test_ranks_leave_the_process_group_together(tmp_path):
    """``multi_gpu_train.json``'s finalize: the rank done first waits for the others, then all destroy the group."""
    warm_processes.spawn(_finish_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["False", "False"]
