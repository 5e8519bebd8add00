"""Seed 002's localisation pieces: detector targets, the detection engines, CL on hand-made detections, the window
rule of Table 2, the extra datalists, and the torchvision import error. Fast: the engines run on a stand-in
detector; only the tests of the Faster R-CNN itself need torchvision (skipped, with the reason, without it)."""

from __future__ import annotations

import builtins
import json
import logging
import sys

import pytest
import torch
from ignite.engine import Events

from cxr_monai.apps.localisation import (
    SEED_CLASSES,
    DetectorLocalisationReport,
    LocalisationHistory,
    cl_table,
    cl_table_markdown,
    class_mean,
    detection_datalist,
    detection_records,
    select_in_window,
)
from cxr_monai.data import DatalistError
from cxr_monai.engines import (
    DetectionBatch,
    DetectionEvaluator,
    DetectionTrainer,
    detection_collate,
)
from cxr_monai.transforms.detection import DetectionTargets, DetectionTargetsd
from cxr_monai.utils import MissingOptionalDependency, require_torchvision


def _torchvision():
    try:
        return require_torchvision()
    except ImportError as error:
        pytest.skip(str(error))


# ----------------------------------------------------------------------------------------------------------
# targets


def test_targets_map_classes_to_labels_from_one_and_drop_other_classes():
    convert = DetectionTargets(["Effusion", "Pneumothorax"])
    target = convert([[0, 0, 8, 8], [2, 2, 6, 9], [1, 1, 3, 3]], ["Pneumothorax", "Mass", "Effusion"])
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[0, 0, 8, 8], [1, 1, 3, 3]]
    assert target["labels"].tolist() == [2, 1]


def test_an_entry_with_no_box_of_the_classes_becomes_an_empty_target():
    out = DetectionTargetsd(["Effusion"])({"image": torch.zeros(1, 8, 8), "boxes": [[1, 1, 4, 4]],
                                           "box_labels": ["Mass"]})
    assert out["targets"]["boxes"].shape == (0, 4) and out["targets"]["labels"].shape == (0,)
    assert DetectionTargetsd(["Effusion"])({"image": torch.zeros(1, 8, 8)})["targets"]["boxes"].shape == (0, 4)


def test_targets_reject_a_label_count_that_differs_and_duplicate_classes():
    with pytest.raises(ValueError, match="x.png: 2 boxes but 1 box_labels"):
        DetectionTargets(["A"])([[0, 0, 2, 2], [1, 1, 3, 3]], ["A"], source="x.png")
    with pytest.raises(ValueError, match="distinct"):
        DetectionTargets(["A", "A"])


# ----------------------------------------------------------------------------------------------------------
# the torchvision import error


@pytest.mark.parametrize(("raised", "expected"), [
    (RuntimeError("operator torchvision::nms does not exist"), "does not work with torch"),
    (ModuleNotFoundError("No module named 'torchvision'", name="torchvision"), "which is not installed"),
])
def test_require_torchvision_explains_a_missing_or_mismatched_build(monkeypatch, raised, expected):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise raised
        return real_import(name, *args, **kwargs)

    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingOptionalDependency, match=expected) as info:  # an ImportError
        require_torchvision("The detector")
    message = str(info.value)
    assert message.startswith("The detector needs torchvision")
    assert "pip install" in message and "../shared/wheels" in message
    if isinstance(raised, RuntimeError):
        assert "torchvision::nms does not exist" in message


# ----------------------------------------------------------------------------------------------------------
# CL on hand-made detections


def _detections(*found):
    boxes, labels, scores = zip(*found) if found else ((), (), ())
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores)}


def test_cl_counts_the_top_box_of_the_class_above_the_score_threshold():
    names = ["Effusion", "Pneumothorax"]
    truth = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), "labels": torch.tensor([1, 2])}
    found = _detections(([20, 20, 30, 30], 1, 0.9),  # the second Effusion box misses
                        ([0, 0, 10, 10], 1, 0.8),  # the third one hits
                        ([50, 50, 60, 60], 1, 0.99),  # the best: on the pneumothorax, but labelled Effusion
                        ([50, 50, 58, 60], 2, 0.04))  # below the score threshold
    top1 = DetectorLocalisationReport.from_detections(detection_records("a.png", truth, found, names), 1, 0.05)
    assert top1.accuracy["iou"]["Effusion"][0.1] == (0.0, 1)
    assert top1.accuracy["iou"]["Pneumothorax"][0.1] == (0.0, 1)
    top2 = DetectorLocalisationReport.from_detections(detection_records("a.png", truth, found, names, top_k=2), 2)
    assert top2.accuracy["iou"]["Effusion"][0.1] == (0.0, 1)
    top3 = DetectorLocalisationReport.from_detections(detection_records("a.png", truth, found, names, top_k=3), 3)
    assert top3.accuracy["iou"]["Effusion"][0.7] == (1.0, 1)
    low = DetectorLocalisationReport.from_detections(
        detection_records("a.png", truth, found, names, top_k=None, score_threshold=0.0), None, 0.0)
    assert low.accuracy["iou"]["Pneumothorax"][0.7] == (1.0, 1)  # IoU 0.8
    assert low.accuracy["iou"]["Pneumothorax"][0.1] == (1.0, 1)
    assert low.metrics()["loc_iou_0.1_mean"] == 1.0
    assert low.to_dict()["predicted_boxes"] == {"top_k": None, "score_threshold": 0.0,
                                                "rule": "every box of the class per image with score >= 0"}


def test_iobb_forgives_a_small_box_inside_the_truth():
    truth = {"boxes": torch.tensor([[0.0, 0, 100, 100]]), "labels": torch.tensor([1])}
    report = DetectorLocalisationReport.from_detections(
        detection_records("a.png", truth, _detections(([10, 10, 20, 20], 1, 0.9)), ["A"]))
    assert report.accuracy["iou"]["A"][0.1] == (0.0, 1)  # IoU 0.01
    assert report.accuracy["iobb"]["A"][0.7] == (1.0, 1)


@pytest.mark.parametrize(("rows", "total"), [
    ((0.0, 0.636, 0.173, 0.378, 0.333, 0.031), 0.259),  # seed 002 Table 2, Ori, CL@5k
    ((0.0, 0.818, 0.217, 0.432, 0.305, 0.033), 0.301),  # Ori, CL@10k
    ((0.018, 0.818, 0.304, 0.459, 0.305, 0.066), 0.328),  # Ori, CL@15k
])
def test_total_is_the_mean_of_the_classes_as_in_the_seed(rows, total):
    mean = class_mean({name: {0.1: (value, 10)} for name, value in zip(SEED_CLASSES, rows)})
    assert mean[0.1] == pytest.approx(total, abs=6e-4)  # the seed's rows are rounded to 3 digits


def test_a_target_label_outside_the_classes_is_an_error():
    with pytest.raises(ValueError, match="a.png: target label 3"):
        detection_records("a.png", {"boxes": [[0, 0, 1, 1]], "labels": [3]}, _detections(), ["A", "B"])


# ----------------------------------------------------------------------------------------------------------
# the window rule


def test_window_picks_the_best_then_the_nearest_then_the_earlier_step():
    values = {400: 0.2, 450: 0.5, 550: 0.5, 600: 0.1, 1600: 0.9}
    assert select_in_window(values, 500, 100) == 450  # 450 and 550 tie and are as near: the earlier
    assert select_in_window({**values, 500: 0.5}, 500, 100) == 500
    assert select_in_window(values, 1000, 100) is None
    assert select_in_window({500: float("nan"), 510: 0.0}, 500, 100) == 510
    assert select_in_window(values, 1000, 600) == 1600  # the window is inclusive at both ends


def _entry(step, values):
    """A history entry whose IoU accuracy at 0.1 is ``values`` (class -> CL)."""
    return {"step": step,
            "accuracy": {"iou": {name: {"0.1": value} for name, value in values.items()}, "iobb": {}},
            "mean": {"iou": {"0.1": sum(values.values()) / len(values)}, "iobb": {}}}


def test_cl_table_reports_the_model_chosen_in_the_window_and_the_model_at_s():
    history = [_entry(90, {"A": 0.0, "B": 1.0}), _entry(100, {"A": 0.5, "B": 0.0}),
               _entry(110, {"A": 1.0, "B": 1.0}), _entry(200, {"A": 0.25, "B": 0.25})]
    table = cl_table(history, ["A", "B"], [100, 200, 300], window=10)
    first, second, third = (table["columns"][s] for s in ("100", "200", "300"))
    assert first["selected_step"] == 110 and first["best"] == {"A": 1.0, "B": 1.0, "Total": 1.0}
    assert first["at_step"] == {"A": 0.5, "B": 0.0, "Total": 0.25}  # no selection
    assert first["evaluations"] == 3 and first["complete"]
    assert second["selected_step"] == 200 and not second["complete"]  # no evaluation after 200 yet
    assert third["selected_step"] is None and third["best"] is None and third["at_step"] is None
    markdown = cl_table_markdown(table, "Ori")
    assert "| Pathology | CL@100 | CL@200 | CL@300 |" in markdown
    assert "| A | 1.000 | 0.250 | - |" in markdown  # best in the window
    assert "| A | 0.500 | 0.250 | - |" in markdown  # at s itself
    assert "| Total | 1.000 | 0.250 | - |" in markdown and "optimistic" in markdown
    assert cl_table([_entry(5000, {"A": 0.1})], ["A"], [5000], 500)["columns"]["5000"]["label"] == "CL@5k"


# ----------------------------------------------------------------------------------------------------------
# datalists


def _datalist(path, entries, key="training"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({key: entries}))
    return path


def test_extra_datalists_append_their_training_entries_relative_to_their_own_folder(tmp_path):
    box = {"boxes": [[1, 1, 4, 4]], "box_labels": ["Effusion"]}
    main = _datalist(tmp_path / "data" / "list.json", [{"image": "a.png", **box}, {"image": "healthy.png"}])
    synthetic = tmp_path / "runs" / "synthetic"
    relative = _datalist(synthetic / "list.json", [{"image": "images/s1.png", **box}])
    absolute = _datalist(tmp_path / "elsewhere" / "list.json", [{"image": str(synthetic / "images" / "s2.png"), **box}])
    entries = detection_datalist(main, "training", base_dir=tmp_path / "images", extra_datalists=[relative, absolute])
    assert [e["image"] for e in entries] == [str(tmp_path / "images" / "a.png"), str(synthetic / "images" / "s1.png"),
                                             str(synthetic / "images" / "s2.png")]  # healthy.png: no boxes
    assert detection_datalist(main, "training", extra_datalists=str(relative))[1]["image"].endswith("s1.png")
    with pytest.raises(DatalistError, match="missing.json: extra datalist not found"):
        detection_datalist(main, "training", extra_datalists=[tmp_path / "missing.json"])
    with pytest.raises(DatalistError, match="at least 5"):
        detection_datalist(main, "training", extra_datalists=[relative], min_entries=5)


# ----------------------------------------------------------------------------------------------------------
# engines and the history, on a stand-in detector


class StandInDetector(torch.nn.Module):
    """torchvision's detector interface: a loss dict in training, one detection dict per image in eval; its
    single box is ``[0, 0, 4 * w, 4 * w]`` of class 1, so training moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, images, targets=None):
        if self.training:
            assert targets is not None and len(targets) == len(images)
            return {"loss_a": (self.w - 2.0) ** 2, "loss_b": self.w * 0.0 + 0.5}
        side = float(self.w.detach()) * 4
        return [{"boxes": torch.tensor([[0.0, 0.0, side, side]]), "labels": torch.tensor([1]),
                 "scores": torch.tensor([0.9])} for _ in images]


def _items(count):
    target = DetectionTargets(["A", "B"])
    return [{"image": torch.rand(1, 16, 16), "targets": target([[0, 0, 8, 8]], ["A"])} for _ in range(count)]


def test_detection_trainer_sums_the_loss_dict_and_reports_its_terms():
    network = StandInDetector()
    loader = torch.utils.data.DataLoader(_items(4), batch_size=2, collate_fn=detection_collate)
    trainer = DetectionTrainer("cpu", 1, loader, network, torch.optim.SGD(network.parameters(), lr=0.1))
    trainer.run()
    output = trainer.state.output
    assert set(output) >= {"loss", "loss_a", "loss_b", "image", "label"}
    assert output["loss"].item() == pytest.approx(output["loss_a"] + output["loss_b"])
    assert network.w.item() > 1.0  # stepped towards 2
    assert not trainer.scaler.is_enabled()


def test_detection_batch_takes_a_list_of_items_as_no_collation_gives_it():
    images, targets = DetectionBatch()(_items(2), "cpu")
    assert len(images) == 2 and type(images[0]) is torch.Tensor and targets[0]["labels"].tolist() == [1]
    images, targets = DetectionBatch()([{"image": torch.zeros(1, 4, 4)}], "cpu")
    assert targets is None


def test_history_every_few_steps_with_the_window_rule_and_the_chosen_models(tmp_path, caplog):
    from monai.handlers import ValidationHandler

    network = StandInDetector()
    test_loader = torch.utils.data.DataLoader(_items(2), batch_size=2, collate_fn=detection_collate)
    evaluator = DetectionEvaluator("cpu", test_loader, network)
    train_loader = torch.utils.data.DataLoader(_items(2), batch_size=1, collate_fn=detection_collate)
    trainer = DetectionTrainer("cpu", 4, train_loader, network, torch.optim.SGD(network.parameters(), lr=0.2))
    history = LocalisationHistory(evaluator, tmp_path / "loc", ["A", "B"], report_steps=[4, 8], window=2,
                                  network=network, model_dir=tmp_path / "models", variant="Ori")
    history.attach(trainer)
    ValidationHandler(validator=evaluator, interval=2, epoch_level=False).attach(trainer)
    logged = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2),
                              lambda engine: logged.append(engine.state.output.get("val_loc_iou_0.1_mean")))
    with caplog.at_level(logging.INFO):
        trainer.run()
    stored = json.loads((tmp_path / "loc" / "history.json").read_text())
    assert [e["step"] for e in stored["evaluations"]] == [2, 4, 6, 8]
    # w after k SGD steps on (w - 2)^2 with lr 0.2: 2 - 0.6^k; the box [0, 0, 4w, 4w] against [0, 0, 8, 8]
    ious = [min(4 * (2 - 0.6 ** k), 8) ** 2 / 64 for k in (2, 4, 6, 8)]
    got = [e["accuracy"]["iou"]["A"]["0.7"] for e in stored["evaluations"]]
    assert got == [float(iou >= 0.7) for iou in ious]
    assert logged == [1.0, 1.0, 1.0, 1.0]  # CL at IoU 0.1 in the trainer's output, for MLflow
    table = json.loads((tmp_path / "loc" / "cl_table.json").read_text())
    assert table["columns"]["4"]["selected_step"] == 4 and table["columns"]["8"]["selected_step"] == 8
    assert table["columns"]["4"]["model_step"] == 4
    saved = torch.load(tmp_path / "models" / "model_cl_4.pt", weights_only=True)
    assert set(saved) == {"w"}
    assert trainer.state.metrics["cl_8_mean"] == 1.0 and trainer.state.metrics["cl_4_step"] == 4.0
    markdown = (tmp_path / "loc" / "cl_table.md").read_text()
    assert markdown.startswith("# Ori: CL at IoU 0.1") and "| A | 1.000 | 1.000 |" in markdown
    assert "| B | - | - |" in markdown

    # a resumed run reads the history back, keeping the evaluations up to its step
    again = LocalisationHistory(evaluator, tmp_path / "loc", ["A", "B"], report_steps=[4, 8], window=2)
    trainer.state.iteration = 5
    again.started(trainer)
    assert [e["step"] for e in again.history] == [2, 4]


# ----------------------------------------------------------------------------------------------------------
# the Faster R-CNN (torchvision)


def test_faster_rcnn_takes_grey_images_trains_and_detects():
    _torchvision()
    from cxr_monai.networks import faster_rcnn_fpn

    torch.manual_seed(0)
    model = faster_rcnn_fpn(["A", "B"], 64, backbone="resnet18", representation_size=32,
                            box_batch_size_per_image=16)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # two classes and the background
    targets = [DetectionTargets(["A", "B"])([[8, 8, 40, 40]], ["B"]), DetectionTargets(["A", "B"])(None, None)]
    losses = model.train()([torch.rand(1, 64, 64), torch.rand(1, 64, 64)], targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(value) for value in losses.values())
    (found,) = model.eval()([torch.rand(1, 64, 64)])
    assert found["boxes"].shape[1] == 4 and ((found["labels"] >= 1) & (found["labels"] <= 2)).all()


def test_faster_rcnn_loads_a_coco_like_file_and_names_the_mismatched_head(tmp_path, caplog):
    _torchvision()
    from cxr_monai.networks import faster_rcnn_fpn

    source = faster_rcnn_fpn(["A", "B", "C"], 64, backbone="resnet18", representation_size=32)
    state = source.state_dict()
    torch.save(state, tmp_path / "detector.pt")
    with caplog.at_level(logging.INFO):
        model = faster_rcnn_fpn(["A"], 64, backbone="resnet18", representation_size=32,
                                pretrained_path=tmp_path / "detector.pt")
    assert "roi_heads.box_predictor.cls_score.weight 2x32 <- roi_heads.box_predictor.cls_score.weight 4x32" in caplog.text
    assert torch.equal(model.state_dict()["backbone.body.conv1.weight"], state["backbone.body.conv1.weight"])
    backbone_only = {key.removeprefix("backbone.body."): value for key, value in state.items()
                     if key.startswith("backbone.body.")}
    torch.save(backbone_only, tmp_path / "resnet18.pt")  # an ImageNet classifier's layout
    model = faster_rcnn_fpn(["A"], 64, backbone="resnet18", representation_size=32,
                            pretrained_path=tmp_path / "resnet18.pt")
    assert torch.equal(model.state_dict()["backbone.body.layer4.1.conv2.weight"],
                       state["backbone.body.layer4.1.conv2.weight"])


def test_the_packages_import_without_torchvision_and_the_detector_says_what_is_missing():
    """With torchvision unimportable, cxr_monai.networks / engines / apps.localisation still import; the detector
    raises require_torchvision's ImportError (in a subprocess: the test process has torchvision loaded)."""
    import subprocess

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torchvision' or name.startswith('torchvision.'):\n"
        "            raise RuntimeError('operator torchvision::nms does not exist')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cxr_monai.networks, cxr_monai.engines, cxr_monai.apps.localisation, cxr_monai.transforms.detection\n"
        "try:\n"
        "    cxr_monai.networks.faster_rcnn_fpn\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ImportError: The Faster R-CNN detector needs torchvision, but the installed torchvision does not work" \
        in result.stdout
    assert "torchvision::nms does not exist" in result.stdout
