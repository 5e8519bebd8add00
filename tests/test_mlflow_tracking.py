"""MLflow (issue #9, items 5 and 7): a failed run ends FAILED, the phase and both losses per iteration, model tags,
artifacts under their folder, the evaluation linked to the training run that wrote its model, a moved output folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from ignite.engine import Events
from monai.handlers import StatsHandler
from monai.utils import path_to_sqlite_uri

from cxr_monai.apps.inpainting import (
    PHASE_CODES,
    ContextEncoderTrainer,
    InpaintingGrid,
    border_weight_map,
    context_encoder_scalars,
)
from cxr_monai.apps.inpainting.evaluation import evaluate_inpainting
from cxr_monai.engines import GanSchedule
from cxr_monai.handlers import (
    FailureHandler,
    ImageGridSaver,
    MLFlowTracker,
    ResumableCheckpoint,
    file_sha256,
    relocate_mlflow_artifacts,
)
from cxr_monai.networks import ContextDiscriminator, ContextEncoder
from cxr_monai.reports import log_report_to_mlflow


def _batches(n: int, size: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        patch = torch.rand(size, 1, 128, 128, generator=g)
        masked = patch.clone()
        masked[..., 32:96, 32:96] = 0.5
        weight = torch.as_tensor(border_weight_map()).expand(size, 1, 64, 64)
        out.append({"masked": masked, "target": patch[..., 32:96, 32:96].clone(), "weight": weight})
    return out


def _trainer(output_dir: Path, resume: bool | str = True, fail_at: int | None = None, max_epochs: int = 3):
    """A tiny trainer wired as the bundle wires it: FailureHandler first, StatsHandler, the tracker appended."""
    torch.manual_seed(0)
    g, d = ContextEncoder(base_channels=8, bottleneck_channels=32), ContextDiscriminator(base_channels=8)
    handlers = [
        FailureHandler(),
        ResumableCheckpoint(output_dir / "checkpoints", state_attributes=["g_network"], resume=resume,
                            model_path=output_dir / "models" / "model.pt", model_key="g_network"),
        ImageGridSaver([{"image": torch.rand(1, 128, 128)} for _ in range(2)], output_dir / "grids",
                       grid=InpaintingGrid(g)),
        StatsHandler(output_transform=context_encoder_scalars),
        MLFlowTracker(tracking_uri=path_to_sqlite_uri(str(output_dir / "mlruns.db")), experiment_name="ce",
                      resume=resume, model_path=output_dir / "models" / "model.pt", artifact_root=output_dir,
                      artifacts=[output_dir / "grids", output_dir / "skipped.csv"],
                      output_transform=context_encoder_scalars, phase_key="phase", phase_codes=PHASE_CODES,
                      close_on_complete=True),
    ]
    trainer = ContextEncoderTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=_batches(2), g_network=g,
        g_optimizer=torch.optim.Adam(g.parameters(), 1e-3), d_network=d,
        d_optimizer=torch.optim.Adam(d.parameters(), 1e-3), schedule=GanSchedule(g_l2_epochs=1, d_only_epochs=1),
        train_handlers=handlers,
    )
    if fail_at is not None:
        def fail(engine):
            if engine.state.iteration == fail_at:
                raise ValueError("images/broken.png: not a PNG, JPEG or DICOM image")

        trainer.add_event_handler(Events.ITERATION_COMPLETED, fail)
    return trainer


def _runs(output_dir: Path):
    client = mlflow.MlflowClient(path_to_sqlite_uri(str(output_dir / "mlruns.db")))
    experiment = client.get_experiment_by_name("ce")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_failed_run_ends_failed_and_a_resumed_run_finishes_it(tmp_path, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(ValueError, match="broken.png"):
        _trainer(tmp_path, fail_at=3).run()
    stopped = [m for m in caplog.messages if "stopped at iteration" in m]
    assert stopped == ["ContextEncoderTrainer stopped at iteration 3 (epoch 2): ValueError: images/broken.png: not a "
                       "PNG, JPEG or DICOM image"]  # once, although Ignite hands the exception over twice
    client, [run] = _runs(tmp_path)
    assert run.info.status == "FAILED" and "broken.png" in run.data.tags["failure"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "grids")] == ["grids/grid_epoch0001.png"]

    _trainer(tmp_path).run()  # resumed from the checkpoint: the same MLflow run goes on and finishes
    client, [run] = _runs(tmp_path)
    assert run.info.status == "FINISHED" and "failure" not in run.data.tags
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "l2")]
    assert sorted(steps) == [1, 2, 3, 3, 4, 5, 6]  # iteration 3 was logged before the failure and again


def test_phase_losses_model_and_artifacts(tmp_path):
    _trainer(tmp_path).run()
    client, [run] = _runs(tmp_path)
    run_id = run.info.run_id
    phases = [(m.step, m.value) for m in client.get_metric_history(run_id, "phase")]
    assert sorted(phases) == [(1, 0.0), (2, 0.0), (3, 1.0), (4, 1.0), (5, 2.0), (6, 2.0)]
    assert run.data.tags["phase"] == "joint" and run.data.tags["phase_codes"] == "0=g_l2, 1=d_only, 2=joint"
    assert run.data.tags["cxr_monai.kind"] == "train"
    assert sorted(m.step for m in client.get_metric_history(run_id, "g_loss")) == [1, 2, 5, 6]  # G steps
    assert sorted(m.step for m in client.get_metric_history(run_id, "d_loss")) == [3, 4, 5, 6]  # D steps
    assert run.data.tags["model_path"] == "models/model.pt"
    assert run.data.tags["model_sha256"] == file_sha256(tmp_path / "models" / "model.pt")
    top = sorted(a.path for a in client.list_artifacts(run_id))
    assert top == ["grids", "skipped.csv"] or top == ["grids"]
    grids = [a.path for a in client.list_artifacts(run_id, "grids")]
    assert grids == [f"grids/grid_epoch000{e}.png" for e in (1, 2, 3)]


def test_resume_false_starts_a_new_run_and_never_continues_an_evaluation(tmp_path):
    with pytest.raises(ValueError):
        _trainer(tmp_path, fail_at=1).run()
    client, [failed] = _runs(tmp_path)
    evaluation = client.create_run(failed.info.experiment_id, run_name="evaluate",
                                   tags={"cxr_monai.kind": "evaluate"})  # unfinished, e.g. killed
    _trainer(tmp_path, resume="false").run()
    client, runs = _runs(tmp_path)
    status = {run.info.run_id: run.info.status for run in runs}
    assert status[failed.info.run_id] == "KILLED" and status[evaluation.info.run_id] == "RUNNING"
    [new] = [run for run in runs if run.info.run_id not in (failed.info.run_id, evaluation.info.run_id)]
    assert new.info.status == "FINISHED" and new.data.tags["cxr_monai.kind"] == "train"


def test_evaluation_run_names_the_model_and_the_training_run(tmp_path):
    _trainer(tmp_path).run()
    model_path = tmp_path / "models" / "model.pt"
    generator = ContextEncoder(base_channels=8, bottleneck_channels=32)
    generator.load_state_dict(torch.load(model_path, weights_only=True))
    report = evaluate_inpainting(generator, torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128), "cpu",
                                 n_resamples=0)
    tracking_uri = path_to_sqlite_uri(str(tmp_path / "mlruns.db"))
    run_id = log_report_to_mlflow(report, tracking_uri, "ce", model_path=model_path)
    client, runs = _runs(tmp_path)
    training = next(run for run in runs if run.data.tags.get("cxr_monai.kind") == "train")
    tags = client.get_run(run_id).data.tags
    assert tags["cxr_monai.kind"] == "evaluate" and tags["model_path"] == "models/model.pt"
    assert tags["model_sha256"] == training.data.tags["model_sha256"]
    assert tags["training_run_id"] == tags["mlflow.parentRunId"] == training.info.run_id
    assert training.info.run_name in tags["mlflow.note.content"]

    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(1)}, other)  # a model no training run of this experiment wrote
    tags = client.get_run(log_report_to_mlflow(report, tracking_uri, "ce", model_path=other)).data.tags
    assert "mlflow.parentRunId" not in tags and "no training run" in tags["mlflow.note.content"]


def test_moved_output_folder_finds_its_artifacts_again(tmp_path):
    first = tmp_path / "first"
    _trainer(first).run()
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(first, moved)
    uri = path_to_sqlite_uri(str(moved / "mlruns.db"))
    assert relocate_mlflow_artifacts(uri) == ["ce"]
    assert relocate_mlflow_artifacts(uri) == []  # nothing left to change
    client, [run] = _runs(moved)
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith((moved / "mlruns").as_uri())
    assert run.info.artifact_uri.startswith((moved / "mlruns").as_uri())
    downloaded = client.download_artifacts(run.info.run_id, "grids/grid_epoch0003.png", str(tmp_path / "dl"))
    assert Path(downloaded).is_file()
    again = tmp_path / "again"
    shutil.move(moved, again)
    _trainer(again, max_epochs=4).run()  # moved once more; the tracker relocates the store itself when it starts
    assert not first.exists() and not moved.exists()
    client, [old, new] = _runs(again)
    assert old.info.artifact_uri.startswith((again / "mlruns").as_uri())
    assert new.info.artifact_uri.startswith((again / "mlruns").as_uri())
    assert [a.path for a in client.list_artifacts(new.info.run_id, "grids")][-1] == "grids/grid_epoch0004.png"
