"""Context-encoder evaluation: Table 1 metrics, anomaly AUROC, report files, MLflow logging, the bundle runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from cxr_monai.apps.inpainting.evaluation import (
    InpaintingEvaluation,
    PatchSet,
    evaluate_inpainting,
    markdown_table,
    write_report,
)
from cxr_monai.apps.inpainting.inference import AnomalyHeatmapInferer
from cxr_monai.data.datalist import load_datalist
from cxr_monai.io import LoadCXRImaged
from cxr_monai.metrics import anomaly_auroc
from cxr_monai.networks import ContextEncoder
from cxr_monai.reports import log_report_to_mlflow
from cxr_monai.transforms import (
    BoxCenteredPatchd,
    LungBoxesd,
    RandLungPatchd,
    ResizeToWorkingResolutiond,
)
from cxr_monai.transforms.intensity import to_network_range


class OracleGenerator(torch.nn.Module):
    """Returns the true centres of ``patches`` in network range, batch after batch, in order."""

    def __init__(self, patches: torch.Tensor) -> None:
        super().__init__()
        self.centres = to_network_range(patches[..., 32:96, 32:96])
        self.position = 0

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        out = self.centres[self.position : self.position + len(masked)]
        self.position += len(masked)
        return out.to(masked.device)


class GreyGenerator(torch.nn.Module):
    """Predicts mid grey (0 in network range, 0.5 in [0, 1]) everywhere."""

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        return masked.new_zeros((masked.shape[0], masked.shape[1], 64, 64))


def patches_around(level: float, n: int, spread: float = 0.05, seed: int = 0) -> torch.Tensor:
    noise = torch.rand(n, 1, 128, 128, generator=torch.Generator().manual_seed(seed)) - 0.5
    return (level + spread * noise).clamp(0, 1)


def test_oracle_generator_scores_perfectly():
    healthy, unhealthy = patches_around(0.4, 5, seed=1), patches_around(0.6, 3, seed=2)
    report = evaluate_inpainting(OracleGenerator(torch.cat([healthy, unhealthy])), healthy, unhealthy, "cpu",
                                 batch_size=2)
    for name in ("healthy", "unhealthy"):
        summary = report.summary[name]
        assert summary["mse_mean"] == pytest.approx(0.0, abs=1e-6)
        assert summary["ssim_mean"] == pytest.approx(1.0, abs=1e-5)
        assert summary["psnr_mean"] == pytest.approx(100.0, abs=1e-3)  # identical -> clipped at 100 dB
        assert summary["anomaly_score_mean"] == pytest.approx(0.0, abs=1e-6)
    assert report.counts == {"healthy": 5, "unhealthy": 3} and len(report.per_patch) == 8


def test_grey_generator_gives_the_expected_mse_and_score():
    healthy, unhealthy = patches_around(0.3, 4, seed=3), patches_around(0.55, 2, seed=4)
    report = evaluate_inpainting(GreyGenerator(), healthy, unhealthy, "cpu")
    for name, patches in (("healthy", healthy), ("unhealthy", unhealthy)):
        centre = patches[..., 32:96, 32:96].double().numpy()
        mse = ((255 * (centre - 0.5)) ** 2).mean(axis=(1, 2, 3))
        score = np.abs(centre - 0.5).mean(axis=(1, 2, 3))
        rows = [row for row in report.per_patch if row["set"] == name]
        np.testing.assert_allclose([row["mse"] for row in rows], mse, rtol=1e-5)
        np.testing.assert_allclose([row["anomaly_score"] for row in rows], score, rtol=1e-5)
        np.testing.assert_allclose([row["psnr"] for row in rows], 10 * np.log10(255**2 / mse), rtol=1e-5)
        assert report.summary[name]["mse_mean"] == pytest.approx(mse.mean(), rel=1e-5)
        assert report.summary[name]["mse_std"] == pytest.approx(mse.std(), rel=1e-4)
    # healthy centres are 0.2 from grey, unhealthy 0.05: every unhealthy score is lower
    assert report.auroc == pytest.approx(0.0)


def test_separable_scores_give_auroc_one_and_report_files(tmp_path):
    healthy, unhealthy = patches_around(0.5, 6, seed=5), patches_around(0.9, 4, seed=6)
    records = [{"image": "p1", "patch": i, "patch_box": [i, 0, i + 128, 128], "box": [10.0, 20.0, 30.0, 40.0],
                "box_label": "Nodule"} for i in range(4)]
    report = evaluate_inpainting(GreyGenerator(), healthy, PatchSet(unhealthy, records), "cpu")
    assert report.auroc == pytest.approx(1.0)
    paths = write_report(report, tmp_path / "eval")

    document = json.loads(paths["report.json"].read_text())
    assert document["counts"] == {"healthy": 6, "unhealthy": 4} and document["anomaly_auroc"] == pytest.approx(1.0)
    assert set(document["healthy"]) == {f"{m}_{s}" for m in ("psnr", "mse", "ssim", "anomaly_score")
                                        for s in ("mean", "std")}

    rows = list(csv.DictReader(open(paths["per_patch.csv"], newline="")))
    assert len(rows) == 10 and {"image", "patch", "set", "psnr", "mse", "ssim", "anomaly_score"} <= set(rows[0])
    lesion = [row for row in rows if row["set"] == "unhealthy"][2]
    assert (lesion["image"], lesion["patch"], lesion["patch_x_min"], lesion["box_label"]) == ("p1", "2", "2", "Nodule")
    assert float(lesion["mse"]) == pytest.approx(report.per_patch[8]["mse"])

    table = paths["table.md"].read_text()
    lines = table.splitlines()
    assert lines[0] == "| MEASURE | HEALTHY TEST SET | UNHEALTHY TEST SET |"
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["PSNR", "MSE", "SSIM"]  # the seed's rows
    psnr = report.summary["healthy"]
    assert f"| PSNR | {psnr['psnr_mean']:.2f} ± {psnr['psnr_std']:.2f} |" in table
    assert "| PATCHES | 6 | 4 |" in table and "AUROC" in table and "1.000" in table


def test_empty_unhealthy_set_is_reported_not_fatal(tmp_path):
    report = evaluate_inpainting(GreyGenerator(), patches_around(0.5, 3), torch.zeros(0, 1, 128, 128), "cpu")
    assert report.auroc is None and report.summary["unhealthy"] is None and report.counts["unhealthy"] == 0
    assert any("unhealthy test set is empty" in note for note in report.notes)
    assert "anomaly_auroc" not in report.metrics() and report.metrics()["n_unhealthy"] == 0
    table = markdown_table(report)
    psnr_row = next(line for line in table.splitlines() if line.startswith("| PSNR |"))
    assert psnr_row.endswith("| — |") and "| PATCHES | 3 | 0 |" in table and "not computed" in table
    paths = write_report(report, tmp_path)
    assert json.loads(paths["report.json"].read_text())["anomaly_auroc"] is None
    with pytest.raises(ValueError, match="both patch sets are empty"):
        evaluate_inpainting(GreyGenerator(), torch.zeros(0, 1, 128, 128), torch.zeros(0, 1, 128, 128), "cpu")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module: creating its tables takes MLflow several seconds."""
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlruns.db').as_posix()}"


def test_log_report_to_mlflow_sqlite(tmp_path, tracking_uri):
    from mlflow import MlflowClient

    report = evaluate_inpainting(GreyGenerator(), patches_around(0.5, 3, seed=7), patches_around(0.8, 2, seed=8),
                                 "cpu")
    files = write_report(report, tmp_path / "eval")
    uri = tracking_uri
    run_id = log_report_to_mlflow(report, uri, "ce_test", run_name="evaluate", files=files)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate"
    assert run.data.metrics["eval_anomaly_auroc"] == pytest.approx(report.auroc)
    assert run.data.metrics["eval_healthy_psnr_mean"] == pytest.approx(report.summary["healthy"]["psnr_mean"])
    assert run.data.metrics["eval_n_unhealthy"] == 2
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluation")}
    assert artifacts == {"evaluation/report.json", "evaluation/per_patch.csv", "evaluation/table.md"}
    database_dir = Path(uri[len("sqlite:///"):]).parent
    assert (database_dir / "mlruns").is_dir()  # artifacts next to the database, not in the working directory
    # into an existing run, e.g. the training run
    existing = client.create_run(run.info.experiment_id, run_name="train").info.run_id
    assert log_report_to_mlflow(report, uri, run_id=existing) == existing
    assert client.get_run(existing).data.metrics["eval_healthy_mse_mean"] == pytest.approx(
        report.summary["healthy"]["mse_mean"])
    with pytest.raises(ValueError, match="file store"):
        log_report_to_mlflow(report, str(tmp_path / "mlruns"))


def test_log_report_honours_mlflow_tracking_uri_like_monai(tmp_path, tracking_uri, monkeypatch):
    from mlflow import MlflowClient

    report = evaluate_inpainting(GreyGenerator(), patches_around(0.5, 2, seed=1), patches_around(0.8, 2, seed=2),
                                 "cpu")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    elsewhere = tmp_path / "bundle_default.db"
    run_id = log_report_to_mlflow(report, f"sqlite:///{elsewhere.as_posix()}", "ce_env_test")
    assert MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.metrics["eval_n_healthy"] == 2
    assert not elsewhere.exists()


def preprocessing() -> Compose:
    return Compose([
        LoadCXRImaged(keys=["image", "lung_mask"], ensure_channel_first=True, allow_missing_keys=True),
        ResizeToWorkingResolutiond(keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"],
                                   box_keys=["boxes", "lung_boxes"], longest_side=256, allow_missing_keys=True),
        LungBoxesd(),
    ])


def test_evaluation_runner_on_phantoms(phantom_datalist, tmp_path, tracking_uri):
    from mlflow import MlflowClient

    healthy = load_datalist(phantom_datalist, "test")
    unhealthy = load_datalist(phantom_datalist, "test_unhealthy")
    no_boxes = {key: value for key, value in unhealthy[0].items() if key not in ("boxes", "box_labels")}
    n_boxes = sum(len(entry["boxes"]) for entry in unhealthy)
    torch.manual_seed(0)
    generator = ContextEncoder(base_channels=8, bottleneck_channels=16)

    def run(output_dir):
        return InpaintingEvaluation(
            generator, healthy, [*unhealthy, no_boxes], preprocessing(),
            RandLungPatchd(keys="image", box_key="lung_boxes", num_samples=4),
            BoxCenteredPatchd(keys="image", box_key="boxes"), output_dir, device="cpu", seed=3,
            tracking_uri=tracking_uri, experiment_name="ce_phantom",
        ).run()

    report = run(tmp_path / "a")
    assert len(healthy) == 2 and n_boxes == 3
    assert report.counts == {"healthy": 4 * len(healthy), "unhealthy": n_boxes}
    assert report.auroc is not None and 0.0 <= report.auroc <= 1.0
    stem = Path(no_boxes["image"]).stem
    assert any(f"{stem}: no 'boxes'" in note for note in report.notes)
    assert not any(str(phantom_datalist.parent) in note for note in report.notes)  # stems only, no folders
    rows = list(csv.DictReader(open(tmp_path / "a" / "per_patch.csv", newline="")))
    lesion_rows = [row for row in rows if row["set"] == "unhealthy"]
    assert all(row["box_label"] and row["box_x_min"] and row["patch_x_min"] for row in lesion_rows)
    assert {row["image"] for row in rows if row["set"] == "healthy"} == {
        entry["image"].rsplit("/", 1)[-1].rsplit(".", 1)[0] for entry in healthy}
    # seeded: the same patches and scores again
    run(tmp_path / "b")
    assert (tmp_path / "a" / "per_patch.csv").read_text() == (tmp_path / "b" / "per_patch.csv").read_text()
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("ce_phantom").experiment_id])
    assert len(runs) == 2 and all(r.data.metrics["eval_n_unhealthy"] == 3 for r in runs)


def test_image_level_evaluation_needs_no_lesion_boxes(phantom_datalist, tmp_path, tracking_uri):
    """A labels-only dataset (abnormal images without boxes): no patch-level unhealthy set, yet an image-level
    AUROC from full-image heatmaps; each score is the quantile of the heatmap over the image's lung mask."""
    from mlflow import MlflowClient

    healthy = load_datalist(phantom_datalist, "test")
    unhealthy = [{k: v for k, v in entry.items() if k not in ("boxes", "box_labels")}
                 for entry in load_datalist(phantom_datalist, "test_unhealthy")]
    no_mask = {k: v for k, v in healthy[0].items() if k != "lung_mask"}
    no_window = {**unhealthy[0], "image": unhealthy[0]["image"], "lung_boxes": [[0, 0, 20, 20]], "lung_mask": None}
    no_window = {k: v for k, v in no_window.items() if v is not None}
    inferer = AnomalyHeatmapInferer(stride=32, box_margin=32)
    evaluation = InpaintingEvaluation(
        GreyGenerator(), [*healthy, no_mask], [*unhealthy, no_window], preprocessing(),
        RandLungPatchd(keys="image", box_key="lung_boxes", num_samples=2),
        BoxCenteredPatchd(keys="image", box_key="boxes"), tmp_path, device="cpu",
        tracking_uri=tracking_uri, experiment_name="ce_image_level", heatmap_inferer=inferer,
        image_score_quantile=0.9, min_images_per_class=2,
    )
    report = evaluation.run()
    assert report.auroc is None and report.counts["unhealthy"] == 0  # no boxes: no lesion-centred patches
    image_level = report.image_level
    assert image_level.counts == {"healthy": 3, "unhealthy": 2}
    [skipped] = image_level.notes  # named by its stem (-2: the datalist holds its image twice), never its folder
    assert skipped.startswith(f"unhealthy images: skipped {Path(no_window['image']).stem}-2: lung box [0.0, 0.0, 20.0")
    assert "less than one 128 px window" in skipped and str(phantom_datalist.parent) not in skipped
    scores = {"healthy": [], "unhealthy": []}
    for row in image_level.per_image:
        scores[row["set"]].append(row["image_score"])
    assert image_level.auroc == pytest.approx(anomaly_auroc(scores["healthy"], scores["unhealthy"]))

    # the grey generator's heatmap is |image - 0.5| wherever a hole reached; the score is its quantile in the lungs
    data = preprocessing()(dict(unhealthy[0]))
    heatmap = inferer(data["image"], GreyGenerator(), data["lung_boxes"]).heatmap
    lungs = (data["lung_mask"][0] > 0.5) & torch.isfinite(heatmap)
    expected = np.quantile((data["image"][0] - 0.5).abs()[lungs].numpy(), 0.9)
    assert scores["unhealthy"][0] == pytest.approx(expected, rel=1e-5)
    assert [row["region"] for row in image_level.per_image if row["set"] == "healthy"] == ["lung mask"] * 2 + [
        "lung boxes"]

    rows = list(csv.DictReader(open(tmp_path / "per_image.csv", newline="")))
    assert [row["set"] for row in rows] == ["healthy"] * 3 + ["unhealthy"] * 2
    assert "Image-level AUROC (abnormal vs healthy images" in (tmp_path / "table.md").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["image_level"]["auroc"] == pytest.approx(image_level.auroc)
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("ce_image_level").experiment_id])
    assert run.data.metrics["eval_n_unhealthy_images"] == 2 and "eval_image_auroc" in run.data.metrics


def lesion_preprocessing() -> Compose:
    keys = ["image", "lung_mask", "lesion_mask"]
    return Compose([
        LoadCXRImaged(keys=keys, ensure_channel_first=True, allow_missing_keys=True),
        ResizeToWorkingResolutiond(keys=keys, mode=["bilinear", "nearest-exact", "nearest-exact"],
                                   box_keys=["boxes", "lung_boxes"], longest_side=256, allow_missing_keys=True),
        LungBoxesd(),
    ])


def test_healthy_patches_from_the_lesion_free_lung_of_abnormal_images(phantom_datalist, tmp_path):
    """Issue #9: a set where every image has a lesion still gets a healthy test set (their lesion-free lung), the
    unhealthy holes sit on the lesions, every patch records its hole's lung and lesion share, holes with too little
    lung are dropped with a note, and the AUROC and PSNR gap come with bootstrap CIs over images."""
    unhealthy = load_datalist(phantom_datalist, "test_unhealthy")
    evaluation = InpaintingEvaluation(
        GreyGenerator(), [], unhealthy, lesion_preprocessing(),
        RandLungPatchd(keys="image", mask_key="lung_mask", lesion_mask_key="lesion_mask", num_samples=4,
                       lesion_free="hole", min_hole_lung_fraction=0.5, lung_fraction_key="hole_lung_fraction"),
        BoxCenteredPatchd(keys="image", box_key="boxes", lesion_mask_key="lesion_mask", lung_mask_key="lung_mask",
                          min_hole_lung_fraction=0.5, lung_fraction_key="hole_lung_fraction",
                          lesion_fraction_key="hole_lesion_fraction", context_lesion_fraction_key="context_lesion_fraction"),
        tmp_path, device="cpu", healthy_from_unhealthy=True, min_hole_lung_fraction=0.5, n_resamples=200,
    )
    assert evaluation.lesion_free_sources() == unhealthy
    report = evaluation.run()
    stems = {Path(entry["image"]).stem for entry in unhealthy}
    healthy_rows = [row for row in report.per_patch if row["set"] == "healthy"]
    lesion_rows = [row for row in report.per_patch if row["set"] == "unhealthy"]
    assert {row["image"] for row in healthy_rows} == stems and len(healthy_rows) == 4 * len(unhealthy)
    assert all(row["hole_lung_fraction"] >= 0.5 for row in report.per_patch)
    assert all(row["hole_lesion_fraction"] > 0 for row in lesion_rows)  # small nodules fill a part of it
    assert report.summary["unhealthy"]["hole_lesion_fraction_mean"] > 0.05
    assert report.images == {"healthy": len(unhealthy), "unhealthy": len(unhealthy)}
    dropped = [note for note in report.notes if "dropped" in note]
    kept = sum(len(entry["boxes"]) for entry in unhealthy) - len(lesion_rows)
    assert (kept == 0) == (not dropped)  # a drop is always said
    for name in ("auroc", "psnr_gap"):
        interval = report.intervals[name]
        assert interval.low <= interval.value <= interval.high and interval.resamples > 0
    table = (tmp_path / "table.md").read_text()
    assert "PSNR gap (healthy - unhealthy, dB)" in table and "95 % CI" in table and "HOLE LESION FRACTION" in table
    # phantom nodules are small: the context around a lesion-centred hole is mostly healthy lung
    assert all(0 <= row["context_lesion_fraction"] < 0.5 for row in lesion_rows)
    assert "auroc_context_healthy" in report.intervals and "auroc_context_lesion" not in report.intervals
    assert f"context mostly healthy, {len(lesion_rows)} patches" in table and "context mostly lesion, 0 patches" in table
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["intervals"]["auroc"]["value"] == pytest.approx(report.auroc)
    assert {"anomaly_auroc_ci_low", "psnr_gap", "psnr_gap_ci_high"} <= set(report.metrics())
    rows = list(csv.DictReader(open(tmp_path / "per_patch.csv", newline="")))
    assert all(row["hole_lung_fraction"] for row in rows)


def test_image_level_auroc_needs_ten_images_per_class():
    from cxr_monai.apps.inpainting.evaluation import ImageScores, evaluate_images

    def scores(values):
        return ImageScores(np.asarray(values, dtype=float), [{"image": f"i{k}"} for k in range(len(values))])

    one_healthy = evaluate_images(scores([0.1]), scores(np.linspace(0.2, 0.9, 95)))
    assert one_healthy.auroc is None and not one_healthy.intervals
    assert any("1 healthy images, fewer than 10 per class" in note for note in one_healthy.notes)
    enough = evaluate_images(scores(np.linspace(0, 0.5, 10)), scores(np.linspace(0.3, 0.9, 12)), n_resamples=300)
    assert enough.auroc is not None and enough.intervals["auroc"].low <= enough.auroc <= enough.intervals["auroc"].high
