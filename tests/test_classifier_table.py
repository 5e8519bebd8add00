"""``python -m cxr_monai classifier-table``: seed 003's Table 1 rows trained and evaluated from one command.

The fast tests cover the ``--variant`` syntax, the pass-through overrides, the checks before a run and the bundle
commands, and the resume / skip / failure logic with a stand-in interpreter that writes a model and a report
instead of training. The slow test runs the real bundle on classification phantoms (two single-branch rows at
tiny sizes) and runs the command a second time to see it skip both rows.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from cxr_monai import cli
from cxr_monai.apps.classification.variants import (
    TABLE1_VARIANTS,
    ClassifierTable,
    RowFailed,
    Variant,
    parse_overrides,
    parse_variant,
    row_is_finished,
)

TINY = ["--image_size", "128", "--downsample_input", "false", "--block_config", "[1,1,1,1]", "--batch_size", "4",
        "--max_epochs", "1", "--checkpoint_every", "0", "--eval_bootstrap_resamples", "50"]


# ----------------------------------------------------------------------------------------------------------
# --variant


def test_default_rows_are_table_1():
    assert [v.name for v in TABLE1_VARIANTS] == ["DN-121", "DualBranch DN-121", "+LungSegmentation", "+BoneSubtracted"]
    assert [v.input_keys for v in TABLE1_VARIANTS] == [
        ("image",), ("image",), ("image", "lung_segmented"), ("image", "lung_segmented", "bone_suppressed")]
    assert [v.dual_branch for v in TABLE1_VARIANTS] == [False, True, True, True]
    assert [v.slug for v in TABLE1_VARIANTS] == ["dn-121", "dualbranch-dn-121", "lungsegmentation", "bonesubtracted"]


@pytest.mark.parametrize("text, expected", [
    ("DN-121=image", Variant("DN-121", ("image",))),
    ("DN-121 + lung=image, lung_segmented", Variant("DN-121 + lung", ("image", "lung_segmented"))),
    ("both=image,lung_segmented:dual", Variant("both", ("image", "lung_segmented"), True)),
    ("image,lung_segmented", Variant("DN-121 (image + lung_segmented)", ("image", "lung_segmented"))),
    ("image:dual", Variant("DualBranch DN-121 (image)", ("image",), True)),
    ("+LungSegmentation", TABLE1_VARIANTS[2]),
    ("a=b=image", Variant("a=b", ("image",))),
])
def test_parse_variant(text, expected):
    assert parse_variant(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("DN-121=image,lung", "unknown input key 'lung'"),
    ("lung", "nor a Table 1 row"),
    ("x=image:triple", "unknown option ':triple'"),
    ("x=", "no input keys"),
    ("x=image,image", "given twice"),
    ("=image", "no row name before '='"),
    ("+++=image", "needs a letter or digit"),
])
def test_parse_variant_errors_name_the_text_and_reason(text, reason):
    with pytest.raises(ValueError, match="variant") as error:
        parse_variant(text)
    assert text in str(error.value) and reason in str(error.value)


def test_bad_variant_on_the_command_line_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["classifier-table", "--dataset-dir", ".", "--out", "x", "--variant", "DN-121=image,lung"])
    assert exit.value.code == 2
    assert "--variant: variant 'DN-121=image,lung': unknown input key 'lung'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# bundle overrides after --


def test_parse_overrides_splits_key_value_pairs():
    assert parse_overrides(["--max_epochs", "2", "--image_size=128", "--block_config", "[1,1,1,1]"]) == [
        "--max_epochs", "2", "--image_size", "128", "--block_config", "[1,1,1,1]"]


@pytest.mark.parametrize("tokens, reason", [
    (["max_epochs", "2"], "'max_epochs' is not a --key"),
    (["--max_epochs"], "--max_epochs has no value"),
    (["--max_epochs", "--image_size", "128"], "--max_epochs has no value"),
    (["--output_dir", "x"], "use --out"),
    (["--output-dir", "x"], "use --out"),
    (["--input_keys", "[image]"], "use --variant"),
    (["--tracking_uri=sqlite:///x.db"], "OUT/mlruns.db"),
    (["--pretrained_path", "x.pt"], "use --pretrained-path"),
])
def test_parse_overrides_errors(tokens, reason):
    with pytest.raises(ValueError) as error:
        parse_overrides(tokens)
    assert reason in str(error.value)


# ----------------------------------------------------------------------------------------------------------
# the plan: rows, commands, checks


@pytest.fixture
def fake_bundle(tmp_path) -> Path:
    """A bundle folder with the configs the command looks for (empty), and a datalist with lung masks only."""
    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True)
    for name in ("train.json", "inference.json", "evaluate.json", "mlflow.json", "metadata.json", "small.json",
                 "dual_branch.json", "binary.json"):
        (configs / name).write_text("{}")
    (configs / "logging.conf").write_text("")
    data = tmp_path / "data"
    data.mkdir()
    entry = {"image": "a.png", "lung_mask": "a_lungs.png", "lateral": "a_lateral.png", "labels": [0, 1], "label": 1}
    (data / "datalist.json").write_text(json.dumps({"label_names": ["A", "B"], "training": [entry],
                                                    "validation": [entry], "test": [entry]}))
    return tmp_path / "bundle"


def _table(fake_bundle: Path, **kwargs) -> ClassifierTable:
    data = fake_bundle.parent / "data"
    return ClassifierTable(data, data / "datalist.json", fake_bundle.parent / "out", bundle_dir=fake_bundle,
                           **kwargs)


def _option(command: list[str], key: str) -> str | None:
    return command[command.index(f"--{key}") + 1] if f"--{key}" in command else None


def test_train_and_evaluate_commands(fake_bundle):
    table = _table(fake_bundle, variants=[TABLE1_VARIANTS[0], TABLE1_VARIANTS[2]], configs=["small.json"],
                   overrides=["--max_epochs", "2"], pretrained_path=fake_bundle / "configs" / "metadata.json")
    out = fake_bundle.parent / "out"
    train, evaluate = table.train_command(TABLE1_VARIANTS[2]), table.evaluate_command(TABLE1_VARIANTS[2])
    configs = fake_bundle / "configs"
    assert json.loads(_option(train, "config_file")) == [str(configs / n) for n in
                                                        ("train.json", "dual_branch.json", "small.json")]
    assert json.loads(_option(evaluate, "config_file")) == [str(configs / n) for n in (
        "train.json", "dual_branch.json", "small.json", "inference.json", "evaluate.json")]
    for command in (train, evaluate):
        assert command[:4] == [sys.executable, "-m", "monai.bundle", "run"]
        assert _option(command, "output_dir") == str(out / "lungsegmentation")
        assert json.loads(_option(command, "input_keys")) == ["image", "lung_segmented"]
        assert _option(command, "tracking_uri") == f"sqlite:///{out / 'mlruns.db'}"  # one store for every row
        assert command[-2:] == ["--max_epochs", "2"]  # pass-through last
    assert json.loads(_option(evaluate, "eval_variant")) == "+LungSegmentation"
    assert json.loads(_option(train, "run_name")) == "+LungSegmentation"  # one MLflow training run per row
    assert _option(train, "tracking") == str(configs / "mlflow.json") and _option(evaluate, "tracking") is None
    assert _option(train, "pretrained_path") == str(configs / "metadata.json")
    assert _option(evaluate, "pretrained_path") is None
    assert "dual_branch.json" not in _option(table.train_command(TABLE1_VARIANTS[0]), "config_file")


def test_pretraining_runs_first_and_initialises_every_row(fake_bundle):
    data = fake_bundle.parent / "data"
    table = _table(fake_bundle, variants=[TABLE1_VARIANTS[0]], pretrain_datalist=data / "datalist.json")
    table.check()
    (title, binary, log), *rest = table.steps()
    assert title.startswith("binary") and log == fake_bundle.parent / "out" / "binary" / "train.log"
    assert [Path(p).name for p in json.loads(_option(binary, "config_file"))] == ["train.json", "binary.json"]
    assert _option(binary, "dataset_dir") == str(data)  # default: the list's folder
    assert _option(rest[0][1], "pretrained_path") == str(fake_bundle.parent / "out" / "binary" / "models" / "model.pt")


@pytest.mark.parametrize("kwargs, reason", [
    ({"variants": []}, "no row"),
    ({"variants": [Variant("a", ("image",)), Variant("a", ("image", "lung_segmented"))]}, "'a' is given twice"),
    ({"variants": [Variant("DN 121", ("image",)), Variant("dn-121", ("image",))]}, "would share the folder dn-121/"),
    ({"pretrained_path": "a.pt", "pretrain_datalist": "b.json"}, "not both"),
])
def test_rows_and_options_are_validated(fake_bundle, kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        _table(fake_bundle, **kwargs)


@pytest.mark.parametrize("change, kwargs, reason", [
    ("no_dual_config", {"variants": [TABLE1_VARIANTS[1]]}, "dual_branch.json not found; 'DualBranch DN-121' need"),
    (None, {"configs": ["tiny.json"]}, "--configs tiny.json: neither"),
    (None, {"configs": ["train.json"]}, "adds train.json itself"),
    (None, {"variants": [TABLE1_VARIANTS[3]]}, ("no training entry has 'bone_suppressed', from which row "
                                                r"'\+BoneSubtracted' makes its input 'bone_suppressed'")),
    (None, {"pretrained_path": "missing.pt"}, "--pretrained-path .*missing.pt: file not found"),
    ("no_label", {"pretrain_datalist": "pretrain.json"}, "no training entry has 'label'"),
])
def test_check_names_what_is_missing_before_any_run(fake_bundle, monkeypatch, change, kwargs, reason):
    monkeypatch.chdir(fake_bundle.parent)
    if change == "no_dual_config":
        (fake_bundle / "configs" / "dual_branch.json").unlink()
    if change == "no_label":
        (fake_bundle.parent / "pretrain.json").write_text(json.dumps({"training": [{"image": "a.png"}]}))
    table = _table(fake_bundle, **{"variants": [TABLE1_VARIANTS[0]], **kwargs})
    with pytest.raises(ValueError, match=reason):
        table.check()


def test_dry_run_prints_every_command(fake_bundle, capsys):
    data = fake_bundle.parent / "data"
    status = cli.main(["classifier-table", "--dataset-dir", str(data), "--out", str(fake_bundle.parent / "out"),
                       "--bundle-dir", str(fake_bundle), "--variant", "DN-121=image",
                       "--variant", "lung=image,lung_segmented:dual", "--configs", "small.json", "--dry-run",
                       "--", "--max_epochs", "2"])
    text = capsys.readouterr().out
    assert status == 0
    assert [line.split(" (log")[0] for line in text.splitlines() if line.startswith("==")] == [
        "== DN-121: training", "== DN-121: evaluation", "== lung: training", "== lung: evaluation"]
    assert text.count("monai.bundle run") == 4 and text.count("--max_epochs 2") == 4


def test_command_line_errors_are_reported_without_a_traceback(fake_bundle, capsys):
    data = fake_bundle.parent / "data"
    argv = ["classifier-table", "--dataset-dir", str(data), "--out", str(fake_bundle.parent / "out"),
            "--bundle-dir", str(fake_bundle), "--variant", "DN-121=image"]
    assert cli.main([*argv, "--", "--output_dir", "x"]) == 2
    assert "error: bundle override --output_dir: classifier-table sets it" in capsys.readouterr().err
    assert cli.main([*argv, "--pretrain-dataset-dir", str(data)]) == 2
    assert "--pretrain-dataset-dir needs --pretrain-datalist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# resume, skip, failure (a stand-in interpreter instead of the bundle)

# writes models/model.pt for a training, evaluation/report.json for an evaluation; fails where OUT/<row>/fail
# exists (and is empty or names the step)
_STAND_IN = """#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
value = lambda key: json.loads(args[args.index(key) + 1]) if key in ("--eval_variant",) else args[args.index(key) + 1]
out = Path(value("--output_dir"))
print("stand-in bundle run", out)
step = "evaluate" if "evaluate.json" in value("--config_file") else "train"
if (out / "fail").exists() and (out / "fail").read_text() in ("", step):
    print("Traceback: boom"); sys.exit(3)
if step == "evaluate":
    report = {{"variant": value("--eval_variant"), "class_names": ["A"], "abbreviations": {{}}, "images": 1,
              "images_without_known_label": 0, "classes": [{{"name": "A", "positives": 0, "negatives": 1,
                                                             "auroc": None}}], "macro": None}}
    (out / "evaluation").mkdir(parents=True, exist_ok=True)
    (out / "evaluation" / "report.json").write_text(json.dumps(report))
else:
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "models" / "model.pt").write_text("weights")
"""


@pytest.fixture
def stand_in(tmp_path) -> str:
    path = tmp_path / "python"
    path.write_text(_STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def test_finished_rows_are_skipped_and_failures_name_the_row_and_log(fake_bundle, stand_in, capsys):
    rows = [Variant("one", ("image",)), Variant("two", ("image", "lung_segmented"))]
    out = fake_bundle.parent / "out"
    table = _table(fake_bundle, variants=rows, python=stand_in)
    table.run()
    text = capsys.readouterr().out
    assert "| one |" in table.table_path.read_text() and "| two |" in table.table_path.read_text()
    assert text.count("done in") == 4 and row_is_finished(out / "one") and row_is_finished(out / "two")
    assert json.loads((out / "one" / "row.json").read_text())["input_keys"] == ["image"]

    # second invocation: both rows finished; a retrained model makes its row unfinished
    (out / "two" / "models" / "model.pt").write_text("newer weights")
    assert not row_is_finished(out / "two")
    _table(fake_bundle, variants=rows, python=stand_in).run()
    text = capsys.readouterr().out
    skipped = [line for line in text.splitlines() if ": skipped," in line]
    assert len(skipped) == 1 and "] one (input image): skipped" in skipped[0] and text.count("done in") == 2

    # other settings: the skipped row says its recorded commands differ; --force runs it again
    _table(fake_bundle, variants=rows, python=stand_in, overrides=["--max_epochs", "3"]).run()
    assert "differ from this invocation's" in capsys.readouterr().out
    _table(fake_bundle, variants=rows[:1], python=stand_in).run(force=True)
    assert ": skipped," not in capsys.readouterr().out

    # a failed run stops the command and names the row and its log; a failed evaluation leaves the row unfinished
    (out / "two" / "fail").write_text("evaluate")
    with pytest.raises(RowFailed, match=r"row 'two': evaluation failed \(exit 3\); log: .*two/evaluate.log"):
        _table(fake_bundle, variants=rows, python=stand_in).run(force=True)
    assert "Traceback: boom" in capsys.readouterr().err and not row_is_finished(out / "two")
    (out / "two" / "fail").write_text("train")
    with pytest.raises(RowFailed, match=r"row 'two': training failed \(exit 3\); log: .*two/train.log"):
        _table(fake_bundle, variants=rows, python=stand_in).run()


def test_binary_pretraining_runs_once(fake_bundle, stand_in, capsys):
    data = fake_bundle.parent / "data"
    table = _table(fake_bundle, variants=[TABLE1_VARIANTS[0]], pretrain_datalist=data / "datalist.json",
                   python=stand_in)
    table.run()
    assert "pre-training\n$ " in capsys.readouterr().out and table.binary_model.is_file()
    table.run()
    assert "pre-training: skipped" in capsys.readouterr().out


def test_a_failed_row_is_a_clear_command_error(fake_bundle, stand_in, capsys, monkeypatch):
    from cxr_monai.apps.classification import variants

    build = variants.table_from_args
    monkeypatch.setattr(variants, "table_from_args", lambda args: dataclasses.replace(build(args), python=stand_in))
    out = fake_bundle.parent / "out"
    (out / "dn-121").mkdir(parents=True)
    (out / "dn-121" / "fail").write_text("")
    status = cli.main(["classifier-table", "--dataset-dir", str(fake_bundle.parent / "data"), "--out", str(out),
                       "--bundle-dir", str(fake_bundle), "--variant", "DN-121=image"])
    assert status == 1
    assert f"error: row 'DN-121': training failed (exit 3); log: {out / 'dn-121' / 'train.log'}" in \
        capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# end to end on the real bundle


@pytest.mark.slow
def test_two_rows_train_evaluate_merge_and_skip_when_run_again(classification_phantoms, run_bundle, tmp_path):
    command = ["-m", "cxr_monai", "classifier-table", "--dataset-dir", classification_phantoms, "--out", tmp_path,
               "--variant", "DN-121=image", "--variant", "image,lung_segmented", "--configs", "small.json", "--",
               *TINY]
    run_bundle(command, tmp_path / "command.log", timeout=300)
    table = (tmp_path / "table.md").read_text()
    assert "| DN-121 |" in table and "| DN-121 (image + lung_segmented) |" in table
    with sqlite3.connect(tmp_path / "mlruns.db") as db:
        runs = db.execute("select name, status from runs order by start_time").fetchall()
    assert runs == [("DN-121", "FINISHED"), ("evaluate", "FINISHED"),
                    ("DN-121 (image + lung_segmented)", "FINISHED"), ("evaluate", "FINISHED")]
    logs = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*/*.log")}
    assert len(logs) == 4  # train.log and evaluate.log of each row

    run_bundle(command, tmp_path / "again.log", timeout=120)
    again = (tmp_path / "again.log").read_text()
    assert again.count(": skipped,") == 2 and "done in" not in again
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("*/*.log")} == logs
    assert "| DN-121 (image + lung_segmented) |" in again
