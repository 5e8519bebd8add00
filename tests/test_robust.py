"""Robust runs (issue #9, item 5): a bad image is skipped, named in the log and in ``skipped.csv``, and a run fails
only when more than ``max_skipped_fraction`` of its images are; booleans from the command line; one-line errors."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import warm_processes
from ignite.engine import Engine
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Compose, MapTransform

from cxr_monai.apps.inpainting import InpaintingEvaluation
from cxr_monai.apps.inpainting.evaluation import collect_patches
from cxr_monai.data.datalist import load_datalist
from cxr_monai.data.phantom import generate_phantoms
from cxr_monai.data.robust import (
    SKIPPED_KEY,
    SkipLog,
    SkippedImage,
    SkippingCollate,
    SkippingCompose,
    SkippingDataset,
    TooManySkippedError,
    data_error,
    root_cause,
)
from cxr_monai.handlers import FailureHandler, SkippedImagesHandler
from cxr_monai.io import CXRReadError, LoadCXRImaged
from cxr_monai.networks import ContextEncoder
from cxr_monai.transforms import (
    BoxCenteredPatchd,
    LungBoxesd,
    RandLungPatchd,
    ResizeToWorkingResolutiond,
)
from cxr_monai.utils import as_bool

REPO = Path(__file__).resolve().parents[1]


class FakeLoad(MapTransform):
    """Deterministic "reader": entries named ``bad*`` fail as an unreadable file does; counts its calls."""

    calls: dict[str, int] = {}

    def __init__(self) -> None:
        super().__init__("image")

    def __call__(self, data):
        name = data["image"]
        FakeLoad.calls[name] = FakeLoad.calls.get(name, 0) + 1
        if name.startswith("bad"):
            raise CXRReadError(f"{name}: not a PNG, JPEG or DICOM image")
        return {"image": torch.full((1, 4, 4), float(name.split("_")[1]))}


class FakePatches(MapTransform):
    """A two-sample "patch sampler"."""

    def __init__(self) -> None:
        super().__init__("image")

    def __call__(self, data):
        return [dict(data), dict(data)]


def fake_dataset(names, cache=False):
    transform = SkippingCompose([FakeLoad(), FakePatches()])
    entries = [{"image": name} for name in names]
    return CacheDataset(entries, transform, cache_rate=1.0, progress=False) if cache else Dataset(entries, transform)


def test_as_bool_reads_what_the_command_line_passes():
    assert [as_bool(v) for v in (True, False, "true", "false", "True", "FALSE", "1", "0", 1, 0, " yes ")] == [
        True, False, True, False, True, False, True, False, True, False, True]
    with pytest.raises(ValueError, match="resume must be true or false.*'maybe'"):
        as_bool("maybe", "resume")
    with pytest.raises(ValueError, match="got 2"):
        as_bool(2)


def test_root_cause_finds_the_error_under_monai_wrappers():
    transform = Compose([FakeLoad()])
    with pytest.raises(RuntimeError, match="applying transform") as raised:
        transform({"image": "bad_1"})
    root = root_cause(raised.value)
    assert isinstance(root, CXRReadError) and str(root) == "bad_1: not a PNG, JPEG or DICOM image"
    assert data_error(raised.value) is root
    bug = RuntimeError("applying transform")
    bug.__cause__ = KeyError("lung_boxes")
    assert data_error(bug) is None


def test_skipping_compose_returns_a_record_for_data_errors_and_raises_bugs():
    transform = SkippingCompose([FakeLoad(), FakePatches()])
    assert transform({"image": "bad_3"}) == SkippedImage("bad_3", "not a PNG, JPEG or DICOM image")
    assert len(transform({"image": "ok_3"})) == 2
    assert transform(SkippedImage("x", "y")) == SkippedImage("x", "y")  # a cached record passes through
    with pytest.raises(RuntimeError) as raised:  # a bug (KeyError) is not skipped
        SkippingCompose([RandLungPatchd("image")])({"image": torch.zeros(1, 256, 256)})  # LungBoxesd left out
    assert isinstance(root_cause(raised.value), KeyError)


def test_real_unreadable_phantom_is_skipped_with_the_readers_reason(phantoms, tmp_path):
    entry = dict(load_datalist(phantoms / "datalist.json", "training")[0], image=str(tmp_path / "cut.dcm"))
    Path(entry["image"]).write_bytes(b"garbage")
    preprocessing = SkippingCompose([LoadCXRImaged(keys=["image", "lung_mask"], ensure_channel_first=True),
                                     LungBoxesd(),
                                     RandLungPatchd("image", num_samples=2)])
    record = preprocessing(dict(entry))
    assert record.image == entry["image"] and "DICOM" in record.reason and entry["image"] not in record.reason


def test_cache_dataset_caches_the_record_and_never_reads_the_file_again():
    FakeLoad.calls.clear()
    dataset = fake_dataset(["ok_0", "bad_1", "ok_2"], cache=True)
    assert isinstance(dataset[1], SkippedImage) and isinstance(dataset[1], SkippedImage)
    assert FakeLoad.calls["bad_1"] == 1


def test_skip_log_writes_each_image_once_and_stops_past_the_fraction(tmp_path, caplog):
    log = SkipLog(tmp_path / "out" / "skipped.csv", max_fraction=0.1)
    assert (tmp_path / "out" / "skipped.csv").read_text().splitlines() == ["stage,image,reason"]
    with caplog.at_level(logging.WARNING):
        assert log.add("training", SkippedImage("a.png", "not a PNG"), total=20)
        assert not log.add("training", SkippedImage("a.png", "not a PNG"), total=20)  # seen: no second row or line
        log.add("validation", SkippedImage("a.png", "not a PNG"), total=20)
        log.add("training", SkippedImage("b.png", "no lung"), total=20)  # 2 of 20: allowed
        with pytest.raises(TooManySkippedError) as raised:
            log.add("training", SkippedImage("c.png", "no lesion-free lung pixel"), total=20)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("training: 3 of 20 images could not be used")
    assert "max_skipped_fraction 0.1 allows (2)" in message and "a.png: not a PNG; b.png: no lung; c.png" in message
    assert str(tmp_path / "out" / "skipped.csv") in message
    rows = list(csv.DictReader(open(tmp_path / "out" / "skipped.csv", newline="")))
    assert [(r["stage"], r["image"]) for r in rows] == [("training", "a.png"), ("validation", "a.png"),
                                                       ("training", "b.png"), ("training", "c.png")]
    assert sum("skipping a.png (training): not a PNG" in m for m in caplog.messages) == 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SkipLog(max_fraction=1.5)


def test_images_whose_lung_lesions_cover_count_against_their_own_limit(tmp_path):
    """Diffuse disease leaves some images without lesion-free lung: expected, so they have a looser limit of their
    own (0.5 by default) than unreadable files; more than that stops the run (inverted masks?)."""
    log = SkipLog(tmp_path / "skipped.csv", max_fraction=0.0)
    covered = [SkippedImage(f"diffuse_{i}.png", "no lesion-free lung", lesion_covered=True) for i in range(6)]
    for record in covered[:5]:  # 5 of 10: allowed, although max_fraction allows none
        log.add("training", record, total=10)
    assert log.count("training", lesion_covered=True) == 5 and log.count("training", lesion_covered=False) == 0
    with pytest.raises(TooManySkippedError, match=r"6 of 10 images have no lesion-free lung, more than "
                                                  r"max_lesion_covered_fraction 0.5 allows \(5; are the lesion masks"):
        log.add("training", covered[5], total=10)
    with pytest.raises(TooManySkippedError, match="could not be used"):  # a bad file still counts on its own
        log.add("training", SkippedImage("bad.png", "not a PNG"), total=10)
    assert [r.lesion_covered for r in log.skipped("training")] == [True] * 6 + [False]
    # the record says which kind it is, from the sampler's error under MONAI's wrappers
    lung = torch.zeros(1, 64, 64)
    lung[:, 8:56, 8:56] = 1
    sample = {"image": torch.rand(1, 64, 64), "lung_mask": lung, "lesion_mask": lung.clone(),
              "lung_boxes": [[8, 8, 56, 56]]}
    preprocessing = SkippingCompose([RandLungPatchd("image", mask_key="lung_mask", lesion_mask_key="lesion_mask",
                                                    patch_size=16, hole_size=8, num_samples=2)])
    record = preprocessing(sample)
    assert isinstance(record, SkippedImage) and record.lesion_covered and "no lesion-free lung" in record.reason
    dataset = SkippingDataset([record] * 3 + [[{"image": 1}]] * 3, SkipLog(max_fraction=0.0))
    item = dataset[0]
    assert item.item == [{"image": 1}] and len(item.records) == 3  # 3 of 6 covered: allowed, replaced


def test_skipping_dataset_replaces_a_bad_entry_and_carries_its_record():
    FakeLoad.calls.clear()
    dataset = SkippingDataset(fake_dataset(["ok_0", "bad_1", "ok_2"]), SkipLog(max_fraction=0.5))
    item = dataset[1]
    assert item.records == [SkippedImage("bad_1", "not a PNG, JPEG or DICOM image")]
    assert [float(sample["image"][0, 0, 0]) for sample in item.item] == [2.0, 2.0]  # the next entry's samples
    assert float(dataset[1][0]["image"][0, 0, 0]) == 2.0  # known bad: passed over, not read, not reported again
    assert FakeLoad.calls["bad_1"] == 1
    with pytest.raises(IndexError):
        dataset[3]
    too_many = SkippingDataset(fake_dataset(["bad_0", "bad_1", "ok_2", "ok_3"]), SkipLog(max_fraction=0.25))
    first = too_many[0]
    assert first.item is None and len(first.records) == 2  # more than allowed (1): no sample, the run will stop


def test_skipping_dataset_without_replacement_records_at_once(tmp_path):
    log = SkipLog(tmp_path / "skipped.csv", max_fraction=0.0)
    patches = [p for item in SkippingDataset(fake_dataset(["ok_0", "bad_1"]), log, "validation", replace=False)
               for p in item]
    assert len(patches) == 2 and log.count("validation") == 1  # recorded without the check ...
    with pytest.raises(TooManySkippedError, match="validation: 1 of 2 images"):
        log.check()  # ... which the training run makes when it starts


def test_skipping_collate_moves_records_into_the_batch():
    collate = SkippingCollate()
    dataset = SkippingDataset(fake_dataset(["ok_0", "bad_1", "ok_2"]), SkipLog(max_fraction=0.5))
    batch = collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (4, 1, 4, 4) and batch[SKIPPED_KEY] == (SkippedImage("bad_1", "not a PNG, "
                                                                                        "JPEG or DICOM image"),)
    only_records = collate([SkippedImage("x", "y"), []])
    assert only_records == {SKIPPED_KEY: (SkippedImage("x", "y"),)}


@pytest.mark.parametrize("workers", [0, 2])
def test_training_loop_skips_a_bad_image_read_in_a_worker(tmp_path, workers, caplog):
    """The record of an image skipped in a DataLoader worker reaches the trainer's log and skipped.csv; every batch
    keeps its size; one image too many stops the run with the counts and the file in one line."""
    names = ["ok_0", "ok_1", "bad_2", "ok_3", "ok_4", "ok_5", "ok_6", "ok_7", "ok_8", "ok_9"]
    log = SkipLog(tmp_path / "skipped.csv", max_fraction=0.1)
    dataset = SkippingDataset(fake_dataset(names), log)
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers, collate_fn=SkippingCollate())
    sizes = []
    engine = Engine(lambda engine, batch: sizes.append(len(batch["image"])))
    FailureHandler().attach(engine)
    SkippedImagesHandler(dataset).attach(engine)
    with caplog.at_level(logging.WARNING):
        engine.run(loader, max_epochs=2)
    assert sizes == [4] * 10  # 2 images x 2 patches, in every batch of both epochs
    assert [row["image"] for row in csv.DictReader(open(tmp_path / "skipped.csv", newline=""))] == ["bad_2"]
    assert any("training: 1 of 10 images were skipped" in m for m in caplog.messages)

    strict = SkippingDataset(fake_dataset(names), SkipLog(tmp_path / "strict.csv", max_fraction=0.0))
    loader = DataLoader(strict, batch_size=2, num_workers=workers, collate_fn=SkippingCollate())
    engine = Engine(lambda engine, batch: None)
    FailureHandler().attach(engine)
    SkippedImagesHandler(strict).attach(engine)
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(TooManySkippedError, match="training: 1 of 10 images.*bad_2"):
        engine.run(loader, max_epochs=1)
    stopped = [m for m in caplog.messages if "stopped at iteration" in m]
    assert len(stopped) == 1 and "TooManySkippedError: training: 1 of 10 images" in stopped[0]


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_one_line_report_of_a_data_error_and_a_full_traceback_for_a_bug():
    raise_wrapped = """
import cxr_monai.utils
from cxr_monai.io import CXRReadError
cxr_monai.utils.report_data_errors_in_one_line()
try:
    try:
        raise {error}
    except Exception as e:
        raise RuntimeError("applying transform <object at 0x7f00>") from e
except Exception as e:
    raise RuntimeError("Failed to evaluate ConfigExpression") from e
"""
    data = _run_python(raise_wrapped.format(error="CXRReadError('/data/x.png: not a PNG')"))
    assert data.returncode == 1
    assert data.stderr.strip().splitlines()[-1] == "CXRReadError: /data/x.png: not a PNG"
    assert "Traceback" not in data.stderr and "applying transform" not in data.stderr
    bug = _run_python(raise_wrapped.format(error="KeyError('lung_boxes')"))
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'lung_boxes'" in bug.stderr


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, num_images=12, size=256, seed=1, abnormal_fraction=0.5)
    return root


def _preprocessing():
    return Compose([
        LoadCXRImaged(keys=["image", "lung_mask"], ensure_channel_first=True, allow_missing_keys=True),
        ResizeToWorkingResolutiond(keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"],
                                   box_keys=["boxes", "lung_boxes"], longest_side=256, allow_missing_keys=True),
        LungBoxesd(),
    ])


def test_evaluation_skips_an_unreadable_image_in_each_set(phantoms, tmp_path):
    healthy = load_datalist(phantoms / "datalist.json", "test")
    unhealthy = load_datalist(phantoms / "datalist.json", "test_unhealthy")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    healthy = [dict(healthy[0], image=str(broken))] + healthy
    unhealthy = [dict(unhealthy[0], image=str(broken))] + unhealthy
    log = SkipLog(tmp_path / "alone.csv", max_fraction=0.0)
    with pytest.raises(RuntimeError) as raised:  # without a log the error propagates, as before
        collect_patches(healthy, _preprocessing(), RandLungPatchd("image", num_samples=2))
    assert isinstance(data_error(raised.value), OSError)  # PIL's UnidentifiedImageError, naming the file
    with pytest.raises(TooManySkippedError, match=f"healthy patches: 1 of {len(healthy)} images.*broken.png"):
        collect_patches(healthy, _preprocessing(), RandLungPatchd("image", num_samples=2), skip_log=log,
                        stage="healthy patches")

    torch.manual_seed(0)
    evaluation = InpaintingEvaluation(
        ContextEncoder(base_channels=8, bottleneck_channels=16), healthy, unhealthy, _preprocessing(),
        RandLungPatchd("image", num_samples=2), BoxCenteredPatchd("image", box_key="boxes", label_key="box_labels"),
        tmp_path / "evaluation", device="cpu", n_resamples=0, max_skipped_fraction=0.5)
    report = evaluation.run()
    rows = list(csv.DictReader(open(tmp_path / "evaluation" / "skipped.csv", newline="")))
    assert sorted(row["stage"] for row in rows) == ["healthy patches", "unhealthy patches"]
    assert all(row["image"] == str(broken) for row in rows)
    assert sum("broken: " in note for note in report.notes) == 2  # one note per set
    assert report.counts["healthy"] == 2 * (len(healthy) - 1)


def _skipped_rank(rank: int, world_size: int, init_file: str, results: str, max_fraction: float) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        dataset = SkippingDataset(list(range(10)), SkipLog(Path(results, "skipped.csv"), max_fraction))
        batches = [{"image": torch.zeros(2)} for _ in range(4)]
        if rank == 1:  # only rank 1 read the bad image, in its second batch
            batches[1][SKIPPED_KEY] = (SkippedImage("bad.png", "not a PNG"),)
        engine = Engine(lambda engine, batch: None)
        FailureHandler().attach(engine)
        SkippedImagesHandler(dataset).attach(engine)
        try:
            engine.run(batches, max_epochs=1)
            outcome = f"finished at {engine.state.iteration}"
        except TooManySkippedError:
            outcome = f"stopped at {engine.state.iteration}"
        Path(results, f"rank{rank}.txt").write_text(f"{outcome}; {dataset.skip_log.count()} skipped")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes under torch.distributed
@pytest.mark.parametrize("max_fraction, outcome", [(0.1, "finished at 4; 1 skipped"), (0.0, "stopped at 1; 1 skipped")])
def test_skipped_images_are_gathered_from_every_rank(tmp_path, max_fraction, outcome):
    """Under torch.distributed every rank counts the image one rank skipped (rank 0 writes it), and a run with too
    many stops on every rank at the same iteration (none waits at a collective for another)."""
    warm_processes.spawn(_skipped_rank, args=(2, str(tmp_path / "init"), str(tmp_path), max_fraction), nprocs=2)
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == [outcome, outcome]
    rows = list(csv.DictReader(open(tmp_path / "skipped.csv", newline="")))
    assert [row["image"] for row in rows] == ["bad.png"]
