"""``python -m cxr_monai clasegnet-table`` (issue #13): seed 004's ResNet-50 vs ClaSegNet table from one command.

The runner is :class:`cxr_monai.apps.bundle_table.BundleTable`, whose skip / resume / failure logic
``test_classifier_table.py`` covers; here the fast tests cover the rows, the commands the ClaSegNet bundle gets, the
overrides the command refuses, the checks before a run, and a run with a stand-in interpreter that writes a model and
a report instead of training. The slow test runs the real bundle on the pneumothorax phantoms at tiny sizes.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from cxr_monai import cli
from cxr_monai.apps.bundle_table import Row, RowFailed, row_is_finished
from cxr_monai.apps.pneumothorax import CLASEGNET_ROWS, ClaSegNetTable, parse_row

TINY = ["--image_size", "128", "--layers", "[1,1,1,1]", "--batch_size", "4", "--max_epochs", "1",
        "--checkpoint_every", "0", "--eval_bootstrap_resamples", "50"]
# smaller still than the brief's tiny run (a quarter of small.json's channels, no example images): start-up of the
# four bundle processes is most of the end-to-end test's time
TINIER = ["--width", "0.125", "--decoder_channels", "[16,8,8,8,8]", "--eval_examples", "0"]


def _option(command: list[str], key: str) -> str | None:
    return command[command.index(f"--{key}") + 1] if f"--{key}" in command else None


# ----------------------------------------------------------------------------------------------------------
# rows


def test_default_rows_are_the_seeds_two():
    assert [row.name for row in CLASEGNET_ROWS] == ["ResNet-50", "ClaSegNet"]
    assert [row.overrides_for("train") for row in CLASEGNET_ROWS] == [{"mode": "baseline"}, {"mode": "clasegnet"}]
    assert [row.overrides_for("evaluate") for row in CLASEGNET_ROWS] == [{"mode": "baseline"}, {"mode": "clasegnet"}]
    assert [row.slug for row in CLASEGNET_ROWS] == ["resnet-50", "clasegnet"]
    assert all(row.overlays == () for row in CLASEGNET_ROWS)


@pytest.mark.parametrize("text, expected", [
    ("ResNet-50", CLASEGNET_ROWS[0]),
    ("clasegnet", CLASEGNET_ROWS[1]),  # a default row's name (any case), or its mode
    ("baseline", CLASEGNET_ROWS[0]),
    ("no MIL=baseline", Row("no MIL", overrides={"mode": "baseline"})),
])
def test_parse_row(text, expected):
    assert parse_row(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("DenseNet", "neither a default row"),
    ("x=resnet", "unknown mode 'resnet'"),
    ("=baseline", "no row name"),
    ("+++=baseline", "needs a letter or digit"),
])
def test_parse_row_errors(text, reason):
    with pytest.raises(ValueError, match="row") as error:
        parse_row(text)
    assert text in str(error.value) and reason in str(error.value)


def test_a_generic_row_overrides_each_run():
    row = Row("r", overlays=("x.json",), overrides={"mode": "baseline"}, train_overrides={"max_epochs": 2},
              evaluate_overrides={"decision_threshold": 0.3})
    assert row.overrides_for("train") == {"mode": "baseline", "max_epochs": 2}
    assert row.overrides_for("evaluate") == {"mode": "baseline", "decision_threshold": 0.3}


# ----------------------------------------------------------------------------------------------------------
# commands, overrides, checks


@pytest.fixture
def fake_bundle(tmp_path) -> Path:
    """A bundle folder with the configs the command looks for (empty), and a datalist with pneumothorax masks."""
    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True)
    for name in ("train.json", "inference.json", "evaluate.json", "mlflow.json", "metadata.json", "small.json"):
        (configs / name).write_text("{}")
    (configs / "logging.conf").write_text("")
    data = tmp_path / "data"
    data.mkdir()
    entry = {"image": "a.png", "lesion_mask": "a_mask.png", "label": 1}
    (data / "datalist.json").write_text(json.dumps({"training": [entry], "validation": [entry], "test": [entry]}))
    return tmp_path / "bundle"


def _table(fake_bundle: Path, **kwargs) -> ClaSegNetTable:
    data = fake_bundle.parent / "data"
    return ClaSegNetTable(data, data / "datalist.json", fake_bundle.parent / "out", bundle_dir=fake_bundle, **kwargs)


def test_train_and_evaluate_commands(fake_bundle):
    table = _table(fake_bundle, configs=["small.json"], overrides=["--max_epochs", "2"],
                   pretrained_path=fake_bundle / "configs" / "metadata.json")
    out, configs = fake_bundle.parent / "out", fake_bundle / "configs"
    for row, mode in zip(CLASEGNET_ROWS, ("baseline", "clasegnet")):
        train, evaluate = table.train_command(row), table.evaluate_command(row)
        assert json.loads(_option(train, "config_file")) == [str(configs / "train.json"), str(configs / "small.json")]
        assert json.loads(_option(evaluate, "config_file")) == [
            str(configs / name) for name in ("train.json", "small.json", "inference.json", "evaluate.json")]
        for command in (train, evaluate):
            assert command[:4] == [sys.executable, "-m", "monai.bundle", "run"]
            assert _option(command, "bundle_root") == str(fake_bundle)
            assert _option(command, "output_dir") == str(out / row.slug)
            assert json.loads(_option(command, "mode")) == mode
            assert _option(command, "tracking_uri") == f"sqlite:///{out / 'mlruns.db'}"  # one store for both rows
            assert command[-2:] == ["--max_epochs", "2"]  # pass-through last
        assert json.loads(_option(evaluate, "eval_variant")) == row.name and _option(train, "eval_variant") is None
        assert json.loads(_option(train, "run_name")) == row.name and _option(evaluate, "run_name") is None
        assert _option(train, "tracking") == str(configs / "mlflow.json") and _option(evaluate, "tracking") is None
        assert _option(train, "pretrained_path") == str(configs / "metadata.json")
        assert _option(evaluate, "pretrained_path") is None
    assert ClaSegNetTable("d", "d/l.json", "o").bundle_dir == Path(cli.__file__).resolve().parents[1] / "bundles" / \
        "clasegnet"


@pytest.mark.parametrize("tokens, reason", [
    (["--mode", "baseline"], "--row NAME=MODE"),
    (["--eval_variant", "x"], "named after the row"),
    (["--output_dir", "x"], "use --out"),
    (["--tracking_uri=sqlite:///x.db"], "OUT/mlruns.db"),
    (["--pretrained_path", "x.pt"], "use --pretrained-path"),
    (["--config_file", "x.json"], "use --configs"),
])
def test_managed_overrides_are_refused(fake_bundle, tokens, reason):
    with pytest.raises(ValueError, match="clasegnet-table sets it") as error:
        _table(fake_bundle, overrides=tokens)
    assert reason in str(error.value)


def test_command_line_errors_are_reported_without_a_traceback(fake_bundle, capsys):
    argv = ["clasegnet-table", "--dataset-dir", str(fake_bundle.parent / "data"), "--out",
            str(fake_bundle.parent / "out"), "--bundle-dir", str(fake_bundle)]
    assert cli.main([*argv, "--", "--mode", "baseline"]) == 2
    assert "error: bundle override --mode: clasegnet-table sets it for each run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        cli.main([*argv, "--row", "x=resnet"])
    assert exit.value.code == 2 and "--row: row 'x=resnet': unknown mode" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, reason", [
    ({"rows": []}, "no row"),
    ({"rows": [CLASEGNET_ROWS[0], Row("ResNet-50", overrides={"mode": "clasegnet"})]}, "given twice"),
    ({"rows": [Row("Res Net", overrides={"mode": "baseline"}), Row("res-net", overrides={"mode": "baseline"})]},
     "would share the folder res-net/"),
])
def test_rows_are_validated(fake_bundle, kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        _table(fake_bundle, **kwargs)


@pytest.mark.parametrize("datalist, kwargs, reason", [
    ({"training": [{"image": "a.png"}], "test": [{"image": "a.png", "lesion_mask": "m.png"}]}, {},
     "no training entry has 'lesion_mask'"),
    ({"training": [{"image": "a.png", "lesion_mask": "m.png"}]}, {}, "no test or test_unhealthy entry"),
    ({"training": [{"image": "a.png", "lesion_mask": "m.png"}], "test": [{"image": "a.png", "lesion_mask": "m.png"}]},
     {"overrides": ["--infer_datalist_keys", '["validation"]']}, "no validation entry"),
    (None, {"configs": ["evaluate.json"]}, "clasegnet-table adds evaluate.json itself"),
    (None, {"configs": ["tiny.json"]}, "--configs tiny.json: neither"),
    (None, {"pretrained_path": "missing.pth"}, "--pretrained-path .*missing.pth: file not found"),
])
def test_check_names_what_is_missing_before_any_run(fake_bundle, monkeypatch, datalist, kwargs, reason):
    monkeypatch.chdir(fake_bundle.parent)
    if datalist is not None:
        (fake_bundle.parent / "data" / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(ValueError, match=reason):
        _table(fake_bundle, **kwargs).check()


def test_check_names_the_bundle(fake_bundle):
    (fake_bundle / "configs" / "evaluate.json").unlink()
    with pytest.raises(ValueError, match="evaluate.json not found: is .* the clasegnet bundle"):
        _table(fake_bundle).check()


def test_dry_run_prints_every_command(fake_bundle, capsys):
    status = cli.main(["clasegnet-table", "--dataset-dir", str(fake_bundle.parent / "data"), "--out",
                       str(fake_bundle.parent / "out"), "--bundle-dir", str(fake_bundle), "--configs", "small.json",
                       "--dry-run", "--", "--max_epochs", "2"])
    text = capsys.readouterr().out
    assert status == 0
    assert [line.split(" (log")[0] for line in text.splitlines() if line.startswith("==")] == [
        "== ResNet-50: training", "== ResNet-50: evaluation", "== ClaSegNet: training", "== ClaSegNet: evaluation"]
    assert text.count("monai.bundle run") == 4 and text.count("--max_epochs 2") == 4
    assert text.count("--mode '\"baseline\"'") == 2 and text.count("--mode '\"clasegnet\"'") == 2


# ----------------------------------------------------------------------------------------------------------
# a run with a stand-in interpreter (writes models/model.pt, or evaluation/report.json as PneumothoraxEvaluation)

_STAND_IN = """#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
value = lambda key: args[args.index(key) + 1]
out = Path(value("--output_dir"))
step = "evaluate" if "evaluate.json" in value("--config_file") else "train"
if (out / "fail").exists() and (out / "fail").read_text() == step:
    print("Traceback: boom"); sys.exit(3)
if step == "evaluate":
    figure = {{"value": 0.5, "low": 0.25, "high": 0.75}}
    dice = figure if json.loads(value("--mode")) == "clasegnet" else None
    report = {{"variant": json.loads(value("--eval_variant")), "threshold": 0.5, "images": 4, "positives": 2,
              "confusion": {{"rows_truth_columns_prediction": [[1, 1], [1, 1]]}}, "accuracy": figure,
              "precision": figure, "recall": figure, "auc": figure, "dice": dice}}
    (out / "evaluation").mkdir(parents=True, exist_ok=True)
    (out / "evaluation" / "report.json").write_text(json.dumps(report))
else:
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "models" / "model.pt").write_text("weights")
"""


def test_both_rows_run_merge_and_skip(fake_bundle, tmp_path, capsys):
    stand_in = tmp_path / "python"
    stand_in.write_text(_STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    out = fake_bundle.parent / "out"
    table = _table(fake_bundle, python=str(stand_in))
    table.run()
    text = capsys.readouterr().out
    lines = table.table_path.read_text().splitlines()
    assert lines[2].startswith("| ResNet-50 | 0.500 (0.250–0.750) |") and lines[2].endswith("| — |")
    assert lines[3].startswith("| ClaSegNet |") and lines[3].endswith("| 0.500 (0.250–0.750) |")
    assert "== ClaSegNet vs ResNet-50" in text and text.count("done in") == 4
    assert json.loads((out / "resnet-50" / "row.json").read_text())["overrides"] == {"mode": "baseline"}

    _table(fake_bundle, python=str(stand_in)).run()
    assert capsys.readouterr().out.count(": skipped,") == 2

    (out / "clasegnet" / "fail").write_text("evaluate")
    with pytest.raises(RowFailed, match=r"row 'ClaSegNet': evaluation failed \(exit 3\); log: .*clasegnet/evaluate"):
        _table(fake_bundle, python=str(stand_in)).run(force=True)
    assert row_is_finished(out / "resnet-50") and not row_is_finished(out / "clasegnet")


# ----------------------------------------------------------------------------------------------------------
# end to end on the real bundle


@pytest.mark.slow
def test_resnet50_and_clasegnet_rows_train_evaluate_and_merge(pneumothorax_phantoms, run_bundle, tmp_path):
    command = ["-m", "cxr_monai", "clasegnet-table", "--dataset-dir", pneumothorax_phantoms, "--out", tmp_path,
               "--configs", "small.json", "--", *TINY, *TINIER]
    run_bundle(command, tmp_path / "command.log", timeout=300)
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[2].startswith("| ResNet-50 |") and lines[2].endswith("| — |")  # no segmentation output: no Dice
    assert lines[3].startswith("| ClaSegNet |") and not lines[3].endswith("| — |")
    assert "| ClaSegNet |" in (tmp_path / "command.log").read_text()  # the table is printed
    with sqlite3.connect(tmp_path / "mlruns.db") as db:
        runs = db.execute("select name, status from runs order by start_time").fetchall()
        parents = db.execute("select t.value from runs r join tags t on t.run_uuid = r.run_uuid "
                             "where r.name = 'evaluate' and t.key = 'training_run_name' order by r.start_time")
        parents = [name for (name,) in parents.fetchall()]
    assert runs == [("ResNet-50", "FINISHED"), ("evaluate", "FINISHED"), ("ClaSegNet", "FINISHED"),
                    ("evaluate", "FINISHED")]
    assert parents == ["ResNet-50", "ClaSegNet"]  # each evaluation belongs to its row's training
    import torch  # the baseline is the same bundle with one flag: no region head, no decoder in its weights

    baseline = torch.load(tmp_path / "resnet-50" / "models" / "model.pt", weights_only=True)
    assert "head.fc.weight" in baseline and not any(key.startswith(("head.regions", "head.decoder")) for key in baseline)
