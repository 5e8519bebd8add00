"""The observer study's statistics and report (issue #15): exact CIs and tests, Cohen's and Fleiss' κ, the 2AFC and
real-or-synthetic tables (seed 002's Table 1 rebuilt from answers), the files and the MLflow run. No database."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from cxr_monai.apps.study.report import StudyReport, add_report_arguments, metric_names
from cxr_monai.apps.study.stats import (
    binomial_p_value,
    binomial_summary,
    clopper_pearson,
    cohen_kappa,
    fleiss_kappa,
    percent_agreement,
)

# seed 002, Table 1: images called real by R1|R2, 25 per pathology and source
SEED_002_TABLE_1 = {
    "Atelectasis": {"real": (25, 25), "StarGAN": (2, 0), "Pix2Pix": (12, 2), "Pix2Pix-N": (19, 6)},
    "Cardiomegaly": {"real": (25, 25), "StarGAN": (2, 0), "Pix2Pix": (18, 4), "Pix2Pix-N": (21, 8)},
    "Effusion": {"real": (25, 24), "StarGAN": (5, 0), "Pix2Pix": (11, 3), "Pix2Pix-N": (17, 6)},
    "Infiltration": {"real": (25, 25), "StarGAN": (6, 0), "Pix2Pix": (11, 3), "Pix2Pix-N": (18, 10)},
    "Pneumonia": {"real": (25, 25), "StarGAN": (0, 0), "Pix2Pix": (14, 4), "Pix2Pix-N": (19, 11)},
    "Pneumothorax": {"real": (25, 25), "StarGAN": (0, 0), "Pix2Pix": (13, 2), "Pix2Pix-N": (14, 4)},
}
SEED_002_TOTAL = {"real": "150|149", "StarGAN": "15|0", "Pix2Pix": "79|18", "Pix2Pix-N": "108|45"}


# ----------------------------------------------------------------------------------------------------------
# statistics


def test_clopper_pearson_known_values():
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    low, high = clopper_pearson(0, 0)
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(11, 10)


def test_binomial_p_value_two_sided_exact():
    assert binomial_p_value(59, 100) == pytest.approx(0.0886, abs=1e-4)
    assert binomial_p_value(0, 10) == pytest.approx(2 * 0.5**10)
    assert binomial_p_value(5, 10) == 1.0
    assert math.isnan(binomial_p_value(0, 0))
    summary = binomial_summary(7, 10)
    assert summary["percent"] == 70.0 and summary["successes"] == 7 and summary["n"] == 10
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(tuple(100 * v for v in clopper_pearson(7, 10)))


def test_fleiss_kappa_wikipedia_example():
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa": 10 items, 14 raters, 5 categories
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))  # every rating in one category
    assert math.isnan(fleiss_kappa([])) and math.isnan(fleiss_kappa(np.zeros((0, 2))))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0], [1, 2]])


def test_cohen_kappa_hand_example():
    # agreement 5/6; chance agreement 1/2 * 1/3 + 1/2 * 2/3 = 1/2; kappa = (5/6 - 1/2) / (1 - 1/2) = 2/3
    assert cohen_kappa([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]) == pytest.approx(2 / 3)
    assert cohen_kappa([True, False, True], [True, False, True]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([True, True], [True, True]))  # one identical constant label: undefined
    assert math.isnan(cohen_kappa([], []))
    assert percent_agreement([1, 1, 0, 0], [1, 0, 0, 0]) == 75.0
    with pytest.raises(ValueError, match="one label per item"):
        cohen_kappa([1, 0], [1])


# ----------------------------------------------------------------------------------------------------------
# studies built in the test


def _2afc_manifest(trials: int = 10) -> dict:
    return {"format": 1, "design": "2afc", "title": "Context encoder 2AFC", "instructions": "Pick the original.",
            "seed": 0, "repeats": 1, "created": "2026-12-03T20:00:00+00:00", "created_from": [], "image_size": None,
            "trials": [{"id": f"t{i:02d}", "images": {"original": f"images/o{i}.png", "inpainted": f"images/i{i}.png"},
                        "group": "inpainted", "label": ""} for i in range(trials)]}


def _2afc_answer(reader: str, trial: str, presentation: int, correct: bool, response_ms: float,
                 repeat: bool = False) -> dict:
    side = "left" if presentation % 2 else "right"
    choice = side if correct else ("right" if side == "left" else "left")
    return {"reader": reader, "trial": trial, "presentation": presentation, "repeat": repeat, "choice": choice,
            "original_side": side, "correct": correct, "called_real": None, "response_ms": response_ms,
            "answered_at": "2026-12-04T10:00:00+00:00"}


R1_CORRECT = [True, True, True, True, True, True, True, False, False, False]  # 7 of 10
R2_CORRECT = [True, False, True, False, True, False, True, False, False, False]  # 4 of 10


@pytest.fixture
def two_afc_report() -> StudyReport:
    answers = []
    for reader, outcomes in (("R1", R1_CORRECT), ("R2", R2_CORRECT)):
        for i, correct in enumerate(outcomes):
            answers.append(_2afc_answer(reader, f"t{i:02d}", i, correct, 1000.0 * (i + 1)))
    # one repeat each: R1 repeats t00 with the same outcome, R2 repeats t01 with the other one; neither counts
    # towards accuracy, so R1's 60 s repeat leaves its response times alone
    answers.append(_2afc_answer("R1", "t00", 10, True, 60_000.0, repeat=True))
    answers.append(_2afc_answer("R2", "t01", 10, True, 60_000.0, repeat=True))
    return StudyReport.from_answers(_2afc_manifest(), answers, generated="2026-12-05T09:00:00+00:00")


def test_2afc_per_reader_pooled_and_agreement(two_afc_report):
    report = two_afc_report
    assert report.readers == ["R1", "R2"]
    r1, r2, pooled = report.accuracy["R1"], report.accuracy["R2"], report.pooled
    assert (r1["n"], r1["successes"], r1["percent"]) == (10, 7, 70.0)
    assert (r2["n"], r2["successes"], r2["percent"]) == (10, 4, 40.0)
    assert (r1["ci_low"], r1["ci_high"]) == pytest.approx(tuple(100 * v for v in clopper_pearson(7, 10)))
    assert r1["p_value"] == pytest.approx(binomial_p_value(7, 10))
    assert (pooled["n"], pooled["successes"], pooled["percent"]) == (20, 11, 55.0)
    assert pooled["p_value"] == pytest.approx(binomial_p_value(11, 20))
    assert report.mean_reader_percent_correct == pytest.approx(55.0)
    times = r1["response_time_s"]  # 1..10 s, the repeat left out
    assert (times["n"], times["median"], times["q1"], times["q3"]) == (10, 5.5, pytest.approx(3.25),
                                                                       pytest.approx(7.75))
    assert times["mean"] == pytest.approx(5.5) and times["std"] == pytest.approx(3.02765, abs=1e-5)

    inter, = report.agreement["inter"]
    assert inter["readers"] == ["R1", "R2"] and inter["n"] == 10
    assert inter["percent_agreement"] == pytest.approx(70.0)
    assert inter["kappa"] == pytest.approx(cohen_kappa(R1_CORRECT, R2_CORRECT))
    fleiss = report.agreement["fleiss"]
    assert fleiss["n"] == 10 and fleiss["readers"] == ["R1", "R2"]
    assert fleiss["kappa"] == pytest.approx(fleiss_kappa([[int(not a) + int(not b), int(a) + int(b)]
                                                          for a, b in zip(R1_CORRECT, R2_CORRECT)]))
    intra = report.agreement["intra"]
    assert (intra["R1"]["n"], intra["R1"]["percent_agreement"]) == (1, 100.0)
    assert math.isnan(intra["R1"]["kappa"])  # one trial, one outcome: undefined
    assert (intra["R2"]["n"], intra["R2"]["percent_agreement"], intra["R2"]["kappa"]) == (1, 0.0, 0.0)


def test_2afc_metrics_are_flat_and_finite(two_afc_report):
    metrics = two_afc_report.metrics()
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())
    assert metrics["pooled_percent_correct"] == 55.0 and metrics["reader_R1_percent_correct"] == 70.0
    assert metrics["pooled_ci_low"] == pytest.approx(100 * clopper_pearson(11, 20)[0])
    assert metrics["reader_R2_trials"] == 10.0 and metrics["mean_reader_percent_correct"] == 55.0
    assert metrics["reader_R1_rt_median_s"] == 5.5
    for key in ("kappa_R1_vs_R2", "agreement_R1_vs_R2", "shared_trials_R1_vs_R2", "fleiss_kappa", "fleiss_trials",
                "intra_agreement_R2", "intra_kappa_R2", "intra_repeated_R1"):
        assert key in metrics, key
    assert "intra_kappa_R1" not in metrics  # undefined, left out
    assert not any(key.startswith("called_real") for key in metrics)


def test_write_files_and_markdown(two_afc_report, tmp_path):
    paths = two_afc_report.write(tmp_path / "report")
    assert set(paths) == {"report.json", "report.md", "report.html", "answers.csv"}
    assert all(path.is_file() for path in paths.values())
    text = paths["report.md"].read_text(encoding="utf-8")
    assert text.startswith("# Context encoder 2AFC: observer study report")
    for expected in ("- Design: 2AFC", "- Readers: R1 (11 answers), R2 (11 answers)", "- Date: 2026-12-05T09:00:00",
                     "Clopper–Pearson", "two-sided exact binomial",
                     "| R1 | 10 | 7 | 70.0 (34.8 to 93.3) | 0.344 | 5.50 (3.25 to 7.75) | 5.50 ± 3.03 |",
                     "| **Pooled** | 20 | 11 | 55.0 (31.5 to 76.9) |", "independent", "Mean of the readers' % correct: 55.0 %",
                     "| R1 vs R2 | 10 | 70.0 |", "Fleiss' κ over the 10 trials answered by all 2 readers",
                     "| R2 | 1 | 0.0 | 0.000 |"):
        assert expected in text, expected
    document = json.loads(paths["report.json"].read_text(encoding="utf-8"))  # strict JSON: NaN written as null
    assert document["accuracy"]["pooled"]["successes"] == 11 and document["agreement"]["intra"]["R1"]["kappa"] is None
    assert len(document["answers"]) == 22
    with open(paths["answers.csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 22 and rows[-1]["repeat"] == "True" and rows[0]["group"] == "inpainted"


def test_reader_without_answers_and_odd_names():
    answers = [_2afc_answer("Dr. A", f"t{i:02d}", i, i < 3, 900.0) for i in range(4)]
    report = StudyReport.from_answers(_2afc_manifest(4), answers, readers=["Dr. A", "R 2"])
    assert report.readers == ["Dr. A", "R 2"]
    assert report.accuracy["R 2"]["n"] == 0 and math.isnan(report.accuracy["R 2"]["percent"])
    assert report.agreement["inter"][0]["n"] == 0 and math.isnan(report.agreement["inter"][0]["kappa"])
    assert report.agreement["fleiss"]["readers"] == ["Dr. A"] and report.agreement["fleiss"]["n"] == 0
    metrics = report.metrics()
    assert metrics["reader_Dr__A_percent_correct"] == 75.0 and metrics["reader_R_2_trials"] == 0.0
    assert "reader_R_2_percent_correct" not in metrics and "fleiss_kappa" not in metrics
    text = report.markdown()
    assert "| R 2 | 0 | 0 | - | - | - (- to -) | - ± - |" in text and "needs at least two readers" in text
    empty = StudyReport.from_answers(_2afc_manifest(4), [])
    assert empty.readers == [] and empty.pooled["n"] == 0 and "Readers: none" in empty.markdown()
    assert metric_names(["a b", "a_b"]) == {"a b": "a_b_2", "a_b": "a_b"}


def test_answers_that_do_not_fit_the_manifest():
    manifest = _2afc_manifest(2)
    with pytest.raises(ValueError, match=r"reader 'R7'.*trial 't99'.*not in the study's manifest"):
        StudyReport.from_answers(manifest, [_2afc_answer("R7", "t99", 0, True, 1.0)])
    twice = [_2afc_answer("R1", "t00", 0, True, 1.0), _2afc_answer("R1", "t00", 1, True, 1.0)]
    with pytest.raises(ValueError, match="twice"):
        StudyReport.from_answers(manifest, twice)
    wrong = {**_2afc_answer("R1", "t00", 0, True, 1.0), "correct": False}
    with pytest.raises(ValueError, match="disagrees"):
        StudyReport.from_answers(manifest, [wrong])
    with pytest.raises(ValueError, match="design"):
        StudyReport.from_answers({**manifest, "design": "ranking"}, [])


# ----------------------------------------------------------------------------------------------------------
# real or synthetic: seed 002's Table 1 from answers


@pytest.fixture(scope="module")
def seed_002_report() -> StudyReport:
    """600 images (6 pathologies x 4 sources x 25), two readers, each calling real as many images as seed 002's
    R1 and R2 did. The manifest lists the generators before the real images: the table still starts with them."""
    trials, answers = [], []
    for group in ("StarGAN", "Pix2Pix", "Pix2Pix-N", "real"):
        for label in SEED_002_TABLE_1:
            for k in range(25):
                trial_id = f"t{len(trials):04d}"
                truth = "real" if group == "real" else "synthetic"
                trials.append({"id": trial_id, "images": {"image": f"images/{trial_id}.png"}, "truth": truth,
                               "group": group, "label": label})
                for reader, called in zip(("R1", "R2"), SEED_002_TABLE_1[label][group]):
                    called_real = k < called
                    answers.append({"reader": reader, "trial": trial_id, "presentation": len(trials) - 1,
                                    "repeat": False, "choice": "real" if called_real else "synthetic",
                                    "original_side": None, "correct": called_real == (truth == "real"),
                                    "called_real": called_real, "response_ms": 1500.0 + k,
                                    "answered_at": "2026-12-04T10:00:00+00:00"})
    manifest = {"format": 1, "design": "real_or_synthetic", "title": "Pix2Pix realism", "instructions": "",
                "seed": 3, "repeats": 0, "created": "2026-12-03T20:00:00+00:00", "created_from": [],
                "image_size": 224, "trials": trials}
    return StudyReport.from_answers(manifest, answers)


def test_real_or_synthetic_reproduces_seed_002_table_1(seed_002_report):
    table = seed_002_report.pathology_table
    assert table["groups"] == ["real", "StarGAN", "Pix2Pix", "Pix2Pix-N"]
    assert list(table["rows"]) == list(SEED_002_TABLE_1)
    for label, cells in SEED_002_TABLE_1.items():
        assert table["rows"][label] == {group: f"{r1}|{r2}" for group, (r1, r2) in cells.items()}
    assert table["rows"]["Atelectasis"]["Pix2Pix-N"] == "19|6"
    assert table["total"] == SEED_002_TOTAL
    assert table["shown"] == dict.fromkeys(table["groups"], "150|150")
    assert table["images"] == dict.fromkeys(table["groups"], 150)

    pix2pix_n = seed_002_report.called_real["Pix2Pix-N"]
    assert pix2pix_n["truth"] == "synthetic"
    assert (pix2pix_n["readers"]["R1"]["successes"], pix2pix_n["readers"]["R1"]["n"]) == (108, 150)
    assert pix2pix_n["readers"]["R1"]["percent"] == pytest.approx(72.0)
    assert (pix2pix_n["pooled"]["successes"], pix2pix_n["pooled"]["n"]) == (153, 300)
    # correct: real images called real, synthetic ones not: R1 150 + 135 + 71 + 42 of 600
    assert seed_002_report.accuracy["R1"]["successes"] == 398 and seed_002_report.accuracy["R1"]["n"] == 600

    metrics = seed_002_report.metrics()
    assert all(math.isfinite(value) for value in metrics.values())
    assert metrics["called_real_Pix2Pix_N"] == pytest.approx(51.0) and metrics["called_real_Pix2Pix_N_count"] == 153
    assert metrics["reader_R2_called_real_Pix2Pix_N_count"] == 45 and metrics["reader_R1_called_real_real"] == 100.0
    assert metrics["fleiss_trials"] == 600 and "kappa_R1_vs_R2" in metrics

    text = seed_002_report.markdown()
    assert "| Pathology | real | StarGAN | Pix2Pix | Pix2Pix-N |" in text
    assert "| Atelectasis | 25\\|25 | 2\\|0 | 12\\|2 | 19\\|6 |" in text  # "|" escaped inside a table cell
    assert "| **Total** | 150\\|149 | 15\\|0 | 79\\|18 | 108\\|45 |" in text
    assert "| Pix2Pix-N | synthetic | R1 | 150 | 108 | 72.0 (" in text
    assert "| Pix2Pix-N | synthetic | **Pooled** | 300 | 153 |" in text

    # the HTML report lays out the same tables: every markdown row is an HTML row with the same cells
    html_rows = _html_table_rows(seed_002_report.html())
    assert ["Atelectasis", "25|25", "2|0", "12|2", "19|6"] in html_rows
    assert ["Total", "150|149", "15|0", "79|18", "108|45"] in html_rows
    markdown_rows = [[cell.strip().replace("\\|", "|").strip("*") for cell in line.strip("|").split(" | ")]
                     for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert html_rows == markdown_rows


def _html_table_rows(page: str) -> list[list[str]]:
    """The text of every table row (header rows included) of an HTML page, in order."""
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append("".join(self.cell).strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(page)
    return parser.rows


def test_html_report_escapes_names_and_stands_alone():
    answers = [_2afc_answer("<b>R&1</b>", f"t{i:02d}", i, True, 900.0) for i in range(3)]
    report = StudyReport.from_answers(_2afc_manifest(3), answers)
    page = report.html()
    assert "<b>R&1</b>" not in page and "&lt;b&gt;R&amp;1&lt;/b&gt;" in page
    assert "<style>" in page and "<link" not in page  # a report.html file needs no server
    linked = report.html(stylesheet_href="/static/study.css")
    assert '<link rel="stylesheet" href="/static/study.css">' in linked and "<style>" not in linked
    assert ["<b>R&1</b>", "3", "3", "100.0 (29.2 to 100.0)", "0.250", "0.90 (0.90 to 0.90)", "0.90 ± 0.00"] in (
        _html_table_rows(page))


# ----------------------------------------------------------------------------------------------------------
# command line and MLflow


def test_report_arguments_defaults():
    import argparse

    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args(["--study", "studies/ce"])
    assert (str(args.study), args.database, args.out, args.mlflow_uri, args.experiment) == (
        "studies/ce", None, None, None, "observer_study")
    with pytest.raises(SystemExit):
        parser.parse_args([])


@pytest.mark.slow  # ~4 s: MLflow's import and the SQLite store's migrations
def test_mlflow_round_trip(two_afc_report, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cxr_monai.reports import Report, log_report_to_mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert isinstance(two_afc_report, Report)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    run_id = log_report_to_mlflow(two_afc_report, uri, experiment_name="observer_study", run_name="study-report")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "study-report"
    assert run.data.metrics["eval_pooled_percent_correct"] == 55.0
    assert run.data.metrics["eval_reader_R1_percent_correct"] == 70.0
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluation")}
    assert artifacts == {"evaluation/report.json", "evaluation/report.md", "evaluation/report.html",
                         "evaluation/answers.csv"}
