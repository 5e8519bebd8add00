"""Unit tests of the classifier's evaluation handler (AUROC report, Table 1, MLflow) and triage writer (CAM overlays at
the stored size, ranked worklist, datalist), on fake decollated evaluator items and a tiny DenseNet."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxr_monai.apps.classification import (
    ClassificationEvaluation,
    TriageWriter,
    abnormal_score,
    auroc_from_dict,
    merge_auroc_tables,
)
from cxr_monai.networks import CXRDenseNet121

CLASSES = ("Atelectasis", "Pleural Effusion", "Support Devices")
SIZE = 64  # the working size
NAN = float("nan")
# per image: logits and labels (1, 0, -1 uncertain, NaN not mentioned); image 5 has no known label at all
LOGITS = [[2.0, -1.0, 0.5], [-1.5, 1.0, 3.0], [0.3, 0.2, -2.0], [-0.5, -2.0, 0.0], [1.0, 0.8, 1.5], [0.0, 0.0, 0.0]]
LABELS = [[1, 0, 1], [0, 1, -1], [1, NAN, 0], [0, 0, 1], [-1, 1, NAN], [NAN, -1, NAN]]


def _tiny_densenet() -> CXRDenseNet121:
    torch.manual_seed(0)
    return CXRDenseNet121(in_channels=1, num_classes=len(CLASSES), downsample_input=False, init_features=8,
                          growth_rate=4, block_config=(2, 2), bn_size=2).eval()


def _phantoms(tmp_path, count=None):
    """Grey PNGs of stored sizes other than the working size (80x96, 96x80, ...)."""
    rng = np.random.default_rng(0)
    paths = []
    for n in range(len(LOGITS) if count is None else count):
        height, width = (80, 96) if n % 2 == 0 else (96, 80)
        path = tmp_path / "images" / f"cxr_{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _items(paths, with_labels=True):
    items = []
    for path, logits, labels in zip(paths, LOGITS, LABELS):
        image = MetaTensor(torch.rand(1, SIZE, SIZE), meta={"filename_or_obj": str(path)})
        item = {"image": image, "pred": torch.tensor(logits)}
        if with_labels:
            item["label"] = torch.tensor(labels, dtype=torch.float32)
        items.append(item)
    return items


def _run(handler, items):
    for item in items:
        handler.item(item, item["image"].meta["filename_or_obj"])
    return handler.completed()


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_evaluation_writes_the_report_and_its_auroc_matches_sklearn(tmp_path):
    paths = _phantoms(tmp_path)
    out = tmp_path / "evaluation"
    handler = ClassificationEvaluation(out, CLASSES, "DN-121 (grey)", {"Atelectasis": "AT", "Pleural Effusion": "PE"},
                                       n_resamples=50, seed=1)
    report = _run(handler, _items(paths))
    assert {p.name for p in out.iterdir()} == {"report.json", "per_image.csv", "table.md", "roc.png"}

    probabilities = 1 / (1 + np.exp(-np.array(LOGITS)))
    labels = np.array(LABELS, dtype=float)
    for c, name in enumerate(CLASSES):
        known = np.isfinite(labels[:, c]) & (labels[:, c] >= 0)
        expected = roc_auc_score(labels[known, c], probabilities[known, c])
        assert report.auroc.per_class[c].value == pytest.approx(expected)
    macro = np.mean([interval.value for interval in report.auroc.per_class])
    assert report.auroc.macro.value == pytest.approx(macro)

    document = json.loads((out / "report.json").read_text())
    assert document["variant"] == "DN-121 (grey)" and document["class_names"] == list(CLASSES)
    assert (document["images"], document["images_scored"], document["images_without_known_label"]) == (6, 5, 1)
    assert [c["positives"] for c in document["classes"]] == [2, 2, 2]
    assert auroc_from_dict(document).macro.value == pytest.approx(macro)

    rows = _read_csv(out / "per_image.csv")
    assert len(rows) == 6 and rows[1]["image"] == str(paths[1])
    assert float(rows[0]["Atelectasis_probability"]) == pytest.approx(probabilities[0, 0])
    assert (rows[1]["Support Devices_label"], rows[2]["Pleural Effusion_label"], rows[5]["known_labels"]) == ("-1", "", "0")

    table = (out / "table.md").read_text()
    assert table.splitlines()[0] == "| architecture / inputs | AT | PE | Support Devices | AVG |"
    assert table.splitlines()[2].startswith(f"| DN-121 (grey) | {report.auroc.per_class[0].value:.3f} |")
    assert "1 without any known label, left out of the AUROCs" in table
    with Image.open(out / "roc.png") as figure:
        assert figure.size[0] > 100


def test_evaluation_without_labels_writes_no_auroc(tmp_path):
    out = tmp_path / "evaluation"
    report = _run(ClassificationEvaluation(out, CLASSES, "DN-121", n_resamples=10), _items(_phantoms(tmp_path), False))
    assert report.auroc is None and report.metrics()["images_without_known_label"] == 6
    assert {p.name for p in out.iterdir()} == {"report.json", "per_image.csv", "table.md"}
    assert json.loads((out / "report.json").read_text())["macro"] is None


def test_merged_table_has_one_row_per_report(tmp_path):
    paths = _phantoms(tmp_path)
    reports = []
    for n, variant in enumerate(["DN-121 (grey)", "DN-121 (grey, lungs, bones)"]):
        out = tmp_path / f"variant{n}"
        items = _items(paths)
        for item in items:
            item["pred"] = item["pred"] * (1 - n) + n * torch.randn(len(CLASSES))
        _run(ClassificationEvaluation(out, CLASSES, variant, {"Atelectasis": "AT"}, n_resamples=20), items)
        reports.append(out / "report.json")
    table = merge_auroc_tables(reports, tmp_path / "table1.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| DN-121")]
    assert [row.split(" | ")[0] for row in rows] == ["| DN-121 (grey)", "| DN-121 (grey, lungs, bones)"]
    assert table.splitlines()[0].startswith("| architecture / inputs | AT | Pleural Effusion |")
    with pytest.raises(ValueError, match="also the variant"):
        merge_auroc_tables([reports[0], reports[0]], tmp_path / "twice.md")
    from cxr_monai.cli import main

    assert main(["auroc-table", *map(str, reports), "--out", str(tmp_path / "cli.md")]) == 0
    assert (tmp_path / "cli.md").read_text() == table.replace(str(tmp_path / "table1.md"), str(tmp_path / "cli.md"))


def test_evaluation_is_logged_to_mlflow(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    handler = ClassificationEvaluation(tmp_path / "evaluation", CLASSES, "DN-121 (grey)", tracking_uri=uri,
                                       n_resamples=10)
    report = _run(handler, _items(_phantoms(tmp_path)))
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    assert run.info.run_name == "evaluate" and run.info.status == "FINISHED"
    assert run.data.metrics["eval_auroc_macro"] == pytest.approx(report.auroc.macro.value)
    assert run.data.metrics["eval_images_without_known_label"] == 1
    assert "eval_auroc_pleural_effusion" in run.data.metrics


def test_triage_ranks_by_the_abnormal_score_and_writes_overlays_at_the_stored_size(tmp_path):
    paths = _phantoms(tmp_path)
    source = tmp_path / "source.json"
    source.write_text(json.dumps({"label_names": list(CLASSES), "test": [
        {"image": f"images/{p.name}", "labels": [None if np.isnan(v) else int(v) for v in labels], "view": "PA"}
        for p, labels in zip(paths, LABELS)]}))
    out = tmp_path / "triage"
    writer = TriageWriter(out, CLASSES, torch.nn.parallel.DataParallel(_tiny_densenet()), datalist=source,
                          base_dir=tmp_path, top_k=2)
    csv_path = _run(writer, _items(paths, with_labels=False))
    rows = _read_csv(csv_path)

    probabilities = 1 / (1 + np.exp(-np.array(LOGITS)))
    expected = probabilities[:, :2].max(axis=1)  # Support Devices is not abnormal
    scores = [float(row["abnormal_score"]) for row in rows]
    assert scores == sorted(scores, reverse=True) and [row["rank"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert sorted(scores) == pytest.approx(sorted(expected))
    first = rows[0]
    assert first["image"] == str(paths[int(np.argmax(expected))])
    assert first["top1_class"] == "Atelectasis" and first["top2_class"] == "Support Devices"
    assert first["top1_overlay"] == "overlays/cxr_0_Atelectasis.png"
    assert float(first["p_Pleural_Effusion"]) == pytest.approx(probabilities[0, 1])

    overlays = sorted((out / "overlays").iterdir())
    assert len(overlays) == 2 * len(paths)
    assert {row[f"top{n}_overlay"] for row in rows for n in (1, 2)} == {f"overlays/{p.name}" for p in overlays}
    for row in rows:
        with Image.open(row["image"]) as radiograph, Image.open(out / row["top1_overlay"]) as overlay:
            assert overlay.size == radiograph.size and overlay.mode == "RGB"

    from cxr_monai.data import load_datalist, validate_datalist

    document = validate_datalist(out / "datalist.json")
    assert document["label_names"] == list(CLASSES)
    assert [entry["image"] for entry in document["test"]] == [row["image"] for row in rows]
    assert set(document["test"][0]) == {"image", "labels", "view"}
    assert len(load_datalist(out / "datalist.json", "test", base_dir=out)) == len(paths)


def test_triage_of_a_dual_branch_model_maps_each_view_over_its_own_radiograph(tmp_path):
    from cxr_monai.networks import DualBranchDenseNet121

    torch.manual_seed(0)
    network = DualBranchDenseNet121(num_classes=len(CLASSES), downsample_input=False, init_features=8, growth_rate=4,
                                    block_config=(2, 2), bn_size=2).eval()
    paths = _phantoms(tmp_path, 2)
    lateral_path = tmp_path / "lateral.png"
    Image.fromarray(np.zeros((70, 90), dtype=np.uint8)).save(lateral_path)
    items = _items(paths, with_labels=False)
    items[0]["lateral"] = MetaTensor(torch.rand(1, SIZE, SIZE), meta={"filename_or_obj": str(lateral_path)})
    items[0]["lateral_present"] = torch.tensor(1.0)
    items[1]["lateral"] = MetaTensor(torch.zeros(1, SIZE, SIZE))  # a study without a lateral: zeros, flag 0
    items[1]["lateral_present"] = torch.tensor(0.0)
    with pytest.raises(ValueError, match="neither view"):
        TriageWriter(tmp_path / "t", CLASSES, network)
    writer = TriageWriter(tmp_path / "t", CLASSES, network, top_k=1, heatmap_method="gradcam")
    rows = {row["image"]: row for row in _read_csv(_run(writer, items))}
    with_lateral, without = rows[str(paths[0])], rows[str(paths[1])]
    assert with_lateral["top1_lateral_overlay"].endswith("_lateral.png") and without["top1_lateral_overlay"] == ""
    with Image.open(tmp_path / "t" / with_lateral["top1_lateral_overlay"]) as overlay:
        assert overlay.size == (90, 70)  # the lateral radiograph's stored size
    assert len(list((tmp_path / "t" / "overlays").iterdir())) == 3


def test_abnormal_score_rules_and_options(tmp_path):
    assert abnormal_score(np.array([0.1, 0.7])) == 0.7
    assert abnormal_score(np.array([0.5, 0.5]), "noisy_or") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="abnormal_score"):
        TriageWriter(tmp_path, CLASSES, overlays=False, abnormal_score="mean")
    with pytest.raises(ValueError, match="need the network"):
        TriageWriter(tmp_path, CLASSES)
    paths = _phantoms(tmp_path, 2)
    writer = TriageWriter(tmp_path / "t", CLASSES, overlays=False, abnormal_score="noisy_or", top_k=5)
    rows = _read_csv(_run(writer, _items(paths, with_labels=False)))
    assert [row["top3_overlay"] for row in rows] == ["", ""] and not (tmp_path / "t" / "overlays").exists()
    p = 1 / (1 + np.exp(-np.array(LOGITS[:2])))
    assert float(rows[0]["abnormal_score"]) == pytest.approx(max(1 - np.prod(1 - p[:, :2], axis=1)))
