"""The observer study's store and web app through Flask's test client: login, the schedule, answers committed once,
only the current showing's pixels, admin behind its token, nothing but the study's images served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask")
pytest.importorskip("sqlalchemy")

from cxr_monai.apps.study.app import create_app  # noqa: E402
from cxr_monai.apps.study.store import REPEAT_GAP, StudyStore, reader_schedule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def study(tmp_path, hand_made_study) -> Path:
    return hand_made_study(tmp_path / "study")


def logged_in(app, name: str = "R1"):
    client = app.test_client()
    response = client.post("/login", data={"name_or_token": name})
    assert response.status_code == 302, response.data
    return client


def test_schedule_is_seeded_per_reader_with_repeats_after_a_gap(study):
    manifest = json.loads((study / "study.json").read_text())
    manifest["repeats"] = 3
    first = reader_schedule(manifest, "R1")
    assert first == reader_schedule(manifest, "R1")
    assert [p.trial for p in first] != [p.trial for p in reader_schedule(manifest, "R2")]
    assert len(first) == 6 + 3 and sum(p.repeat for p in first) == 3
    assert sorted(p.trial for p in first if not p.repeat) == [t["id"] for t in manifest["trials"]]
    for k, shown in enumerate(first):
        if shown.repeat:
            original = next(i for i, p in enumerate(first) if p.trial == shown.trial and not p.repeat)
            assert k - original > min(REPEAT_GAP, len(first) - 1 - original)
    sides = [p.original_side for p in reader_schedule({**manifest, "trials": manifest["trials"] * 10}, "R1")]
    assert {"left", "right"} == set(sides)


def test_reader_answers_are_committed_once_in_order(study):
    store = StudyStore(study)
    reader = store.login("R1")
    assert store.progress(reader).next_presentation == 0
    store.record_answer(reader, 0, "left", 1200.0)
    store.record_answer(reader, 0, "left", 1250.0)  # a retry after a lost reply: accepted, no second row
    with pytest.raises(ValueError, match="already answered"):
        store.record_answer(reader, 0, "right", 900.0)
    with pytest.raises(ValueError, match="not the next"):
        store.record_answer(reader, 3, "left", 900.0)
    with pytest.raises(ValueError, match="choice"):
        store.record_answer(reader, 1, "real", 900.0)
    with pytest.raises(ValueError, match="response_ms"):
        store.record_answer(reader, 1, "left", -5)
    store.record_answer(reader, 1, "right", 800.0)
    # a new store on the same folder (a restarted server) sees exactly what was committed
    answers = StudyStore(study).answers()
    assert [(a["presentation"], a["choice"], a["response_ms"]) for a in answers] == [(0, "left", 1200.0),
                                                                                       (1, "right", 800.0)]
    schedule = store.schedule("R1")
    assert [a["correct"] for a in answers] == [schedule[0].original_side == "left", schedule[1].original_side == "right"]
    assert all(a["called_real"] is None for a in answers)


def test_real_or_synthetic_answers_know_the_truth(tmp_path, hand_made_study):
    folder = hand_made_study(tmp_path / "rs", design="real_or_synthetic", trials=4, repeats=0)
    store = StudyStore(folder)
    reader = store.login("R2")
    truth = {t["id"]: t["truth"] for t in store.manifest["trials"]}
    for number, shown in enumerate(store.schedule("R2")):
        store.record_answer(reader, number, "real", 500.0)
    answers = store.answers()
    assert [a["called_real"] for a in answers] == [True] * 4
    assert [a["correct"] for a in answers] == [truth[a["trial"]] == "real" for a in answers]


def test_web_app_reading_flow(study):
    app = create_app(study)
    client = logged_in(app)
    state = client.get("/api/state").get_json()
    assert state["presentation"] == 0 and state["total"] == 7 and state["slots"] == ["left", "right"]
    assert "original" not in json.dumps(state)  # nothing tells the sides apart
    response = client.get("/api/image/0/left")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/octet-stream"
    width, height = int(response.headers["X-Image-Width"]), int(response.headers["X-Image-Height"])
    assert (width, height) == (32, 24) and len(response.data) == width * height * 2
    store = app.extensions["cxr_monai_study"]
    shown = store.schedule("R1")[0]
    trial = store.trials[shown.trial]
    expected = np.asarray(Image.open(study / trial["images"]["original"]))
    left = np.frombuffer(response.data, "<u2").reshape(height, width)
    assert np.array_equal(left, expected) == (shown.original_side == "left")
    assert client.get("/api/image/1/left").status_code == 404  # not the current showing
    assert client.get("/api/image/0/image").status_code == 404
    answer = client.post("/api/answer", json={"presentation": 0, "choice": "right", "response_ms": 950})
    assert answer.status_code == 200 and answer.get_json()["presentation"] == 1
    assert client.get("/api/image/0/left").status_code == 404  # no going back
    again = client.post("/api/answer", json={"presentation": 0, "choice": "left", "response_ms": 950})
    assert again.status_code == 409 and again.get_json()["state"]["presentation"] == 1
    assert client.post("/api/answer", data="presentation=1&choice=left").status_code == 400  # JSON only
    assert client.post("/api/answer", json={"presentation": 1, "choice": "left"}).status_code == 400
    # a second browser of the same reader continues where the first stopped
    assert logged_in(app).get("/api/state").get_json()["presentation"] == 1


def test_api_needs_a_reader_and_readers_are_apart(study):
    app = create_app(study)
    anonymous = app.test_client()
    assert anonymous.get("/api/state").status_code == 401
    assert anonymous.get("/api/image/0/left").status_code == 401
    assert anonymous.post("/api/answer", json={"presentation": 0, "choice": "left", "response_ms": 1}).status_code == 401
    first, second = logged_in(app, "R1"), logged_in(app, "R2")
    first.post("/api/answer", json={"presentation": 0, "choice": "left", "response_ms": 10})
    assert second.get("/api/state").get_json()["answered"] == 0
    page = second.get("/").get_data(as_text=True)
    assert "R2" in page and "R1" not in page


def test_invitations_only(study):
    app = create_app(study, allow_names=False)
    refused = app.test_client().post("/login", data={"name_or_token": "R9"})
    assert refused.status_code == 403
    token = StudyStore(study).invite("R9")
    client = app.test_client()
    assert client.get(f"/invite/{token}").status_code == 302
    assert client.get("/api/state").get_json()["reader"] == "R9"
    assert app.test_client().get("/invite/not-a-token").status_code == 403
    by_token = app.test_client()
    assert by_token.post("/login", data={"name_or_token": token}).status_code == 302
    assert by_token.get("/api/state").get_json()["reader"] == "R9"


def test_admin_page_needs_the_token_and_shows_no_answers(study):
    app = create_app(study)
    logged_in(app, "R1").post("/api/answer", json={"presentation": 0, "choice": "left", "response_ms": 10})
    client = app.test_client()
    assert "R1" not in client.get("/admin").get_data(as_text=True)
    assert client.post("/admin", data={"admin_token": "wrong"}).status_code == 403
    assert client.post("/admin", data={"admin_token": "admin-secret-token"}).status_code == 302
    page = client.get("/admin").get_data(as_text=True)
    assert "R1" in page and "1 / 7" in page and "left" not in page
    invited = client.post("/admin", data={"invite": "R5"}).get_data(as_text=True)
    assert "/invite/" in invited
    # a reader's session is not an admin session
    reader = logged_in(app, "R1")
    assert "Admin token" in reader.get("/admin").get_data(as_text=True)
    assert reader.get("/admin/report").status_code == 302 and app.test_client().get("/admin/report").status_code == 302


def test_admin_report_page_counts_the_answers_so_far(study):
    app = create_app(study)
    store = app.extensions["cxr_monai_study"]
    reader = logged_in(app, "R1")
    for number in range(3):
        original = store.schedule("R1")[number].original_side
        choice = original if number < 2 else ("left" if original == "right" else "right")
        assert reader.post("/api/answer", json={"presentation": number, "choice": choice,
                                                "response_ms": 1000}).status_code == 200
    logged_in(app, "R2")
    admin = app.test_client()
    admin.post("/admin", data={"admin_token": "admin-secret-token"})
    assert 'href="/admin/report"' in admin.get("/admin").get_data(as_text=True)
    response = admin.get("/admin/report")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert "R1 (3 answers), R2 (0 answers)" in page
    assert '<td>R1</td><td class="number">3</td><td class="number">2</td>' in page
    assert '<link rel="stylesheet" href="/static/study.css">' in page and "<style>" not in page  # CSP: no inline


ATTEMPTS = [
    "/study.json", "/key.csv", "/admin_token", "/secret_key", "/study.db", "/images/", "/static/../study.json",
    "/static/..%2f..%2fstudy.json", "/static/%2e%2e/%2e%2e/study.json", "/api/image/0/..%2f..%2fstudy.json",
    "/api/image/0/../../study.json", "/api/image/0/%2e%2e%2fstudy.json", "/api/image/0/left/../../../key.csv",
    "/api/image/0/....//....//study.json", "/api/image/0/%252e%252e%252fstudy.json",
]


@pytest.mark.parametrize("path", ATTEMPTS)
def test_only_the_study_images_are_served(study, path):
    app = create_app(study)
    client = logged_in(app)
    trial_image = next((study / "images").iterdir()).name
    response = client.get(path)
    body = response.get_data()
    assert response.status_code in (301, 308, 404), (path, response.status_code)
    for secret in (b"admin-secret-token", b'"trials"', b"trial,role", (study / "secret_key").read_bytes()):
        assert secret not in body
    assert client.get(f"/images/{trial_image}").status_code == 404


def test_manifest_paths_outside_the_images_folder_never_resolve(study):
    store = StudyStore(study)
    reader = store.login("R1")
    shown = store.schedule("R1")[0]
    store.trials[shown.trial]["images"] = {"original": "images/../study.json", "inpainted": "../../etc/passwd"}
    for slot in ("left", "right"):
        with pytest.raises(KeyError):
            store.image_path(reader, 0, slot)


def test_invite_command_prints_links(study):
    result = subprocess.run([sys.executable, "-m", "cxr_monai", "study", "invite", "--study", str(study), "--name", "R1",
                             "--name", "R2", "--url", "http://reading-room:8050"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("R1: http://reading-room:8050/invite/")
    token = lines[1].rsplit("/", 1)[1]
    assert StudyStore(study).reader_by_token(token).name == "R2"


def test_a_broken_study_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="study.json"):
        StudyStore(tmp_path)
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(ValueError, match="study.json"):
        StudyStore(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# PostgreSQL: the same app on a real server


@pytest.fixture(scope="module")
def postgres_url():
    """A SQLAlchemy URL of a PostgreSQL database: ``CXR_MONAI_TEST_DATABASE_URL`` when set, else a throwaway
    server started from the machine's PostgreSQL binaries (Debian's ``postgresql`` package) on a socket in a
    temporary folder, as the ``postgres`` user when the tests run as root. Skipped without psycopg or a server."""
    import glob
    import os
    import shutil
    import tempfile

    pytest.importorskip("psycopg", reason="PostgreSQL needs the psycopg driver (pip install 'psycopg[binary]')")
    if os.environ.get("CXR_MONAI_TEST_DATABASE_URL"):
        yield os.environ["CXR_MONAI_TEST_DATABASE_URL"]
        return
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql) and no CXR_MONAI_TEST_DATABASE_URL")
    bin_dir = Path(binaries[-1]).parent
    # its own folder under /tmp: pytest's are closed to other users, and a socket path must stay short
    folder = Path(tempfile.mkdtemp(prefix="cxr-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start PostgreSQL as the postgres user")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            pytest.skip(f"could not start a PostgreSQL server: {' '.join(command[:1])}: {result.stderr[-500:]}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "study", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start", "-o",
        f"-k {folder} -c listen_addresses='' -c fsync=off")
    try:
        yield f"postgresql+psycopg://study@/postgres?host={folder}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # starts a PostgreSQL server (~5 s)
def test_postgresql_store_and_app(study, postgres_url):
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(study, database_url=postgres_url)
    store = app.extensions["cxr_monai_study"]
    assert store.engine.dialect.name == "postgresql"
    assert not (study / "study.db").exists()
    # simultaneous first logins of one name make one reader (the losing insert rolls back and finds the winner)
    with ThreadPoolExecutor(4) as pool:
        readers = list(pool.map(lambda _: store.login("R1"), range(8)))
    assert len({reader.id for reader in readers}) == 1
    client = logged_in(app, "R1")
    schedule = store.schedule("R1")
    choices = [shown.original_side if number % 2 else "left" for number, shown in enumerate(schedule)]
    for number, choice in enumerate(choices):
        response = client.post("/api/answer", json={"presentation": number, "choice": choice, "response_ms": 700})
        assert response.status_code == 200, response.get_json()
    assert client.post("/api/answer", json={"presentation": 0, "choice": choices[0], "response_ms": 1}).status_code \
        == 200  # a retry: accepted, no second row
    flipped = "right" if choices[1] == "left" else "left"
    assert client.post("/api/answer", json={"presentation": 1, "choice": flipped, "response_ms": 1}).status_code == 409
    assert client.get("/api/state").get_json()["done"] is True
    # a second study in the same database keeps its own readers and answers
    other = study.parent / "other"
    import shutil

    shutil.copytree(study, other)
    manifest = json.loads((other / "study.json").read_text())
    manifest["title"] = "Another study"
    (other / "study.json").write_text(json.dumps(manifest))
    assert StudyStore(other, postgres_url).answers() == []
    answers = StudyStore(study, postgres_url).answers()
    assert [a["choice"] for a in answers] == choices and [r["name"] for r in store.readers()] == ["R1"]
    result = subprocess.run([sys.executable, "-m", "cxr_monai", "study", "report", "--study", str(study), "--database",
                             postgres_url, "--out", str(study / "report"), "--mlflow-uri", "none"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((study / "report" / "report.json").read_text())
    first = [a for a in answers if not a["repeat"]]
    assert report["accuracy"]["readers"]["R1"]["successes"] == sum(a["correct"] for a in first)
