"""README command 1 (``make demo`` = ``python -m cxr_monai demo``) and the one honest quality check.

The demo trains the small graph on phantoms with fixed seeds for a few CPU minutes. After that training the
inpainter must already behave as the seed reports on real data: lesion-centred patches are reconstructed
worse than healthy lung patches (lower mean PSNR), and the per-patch anomaly score separates the two sets
better than chance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "cxr_monai", "demo", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_demo_prints_the_table_and_where_everything_is(demo_run):
    out, stdout = demo_run
    run_dir = out / "context_encoder"
    assert "| PSNR |" in stdout and "Anomaly AUROC" in stdout and "Image-level AUROC" in stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{run_dir / 'mlruns.db'}" in stdout
    assert list((run_dir / "grids").glob("grid_epoch*.png"))
    assert list((run_dir / "inference" / "heatmaps").glob("*_overlay.png"))
    client = mlflow.MlflowClient(f"sqlite:///{run_dir / 'mlruns.db'}")
    runs = client.search_runs(client.get_experiment_by_name("context_encoder").experiment_id)
    assert sorted(r.info.run_name == "evaluate" for r in runs) == [False, True]  # one training, one evaluation


def test_short_training_already_separates_healthy_from_lesion_patches(demo_run):
    out, _ = demo_run
    report = json.loads((out / "context_encoder" / "evaluation" / "report.json").read_text())
    assert report["counts"]["healthy"] >= 20 and report["counts"]["unhealthy"] >= 10
    assert report["healthy"]["psnr_mean"] > report["unhealthy"]["psnr_mean"]
    assert report["anomaly_auroc"] > 0.5
