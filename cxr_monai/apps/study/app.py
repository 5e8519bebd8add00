"""The readers' web app (Flask): log in, read the trials one by one, answer by key or mouse, pause, resume.

Routes:

- ``/``: the login form, then the reading page (``templates/study.html``, ``static/study.js``).
- ``/invite/<token>``: logs the invited reader in and goes to ``/``.
- ``/api/state``: the reader's progress and the slots of the next showing; never which side is the original.
- ``/api/image/<showing>/<slot>``: the pixels of a slot of the reader's *current* showing as little-endian uint16
  (width and height in ``X-Image-Width`` / ``X-Image-Height``), so the page can window/level the full bit depth.
- ``/api/answer`` (POST JSON ``{"presentation", "choice", "response_ms"}``): committed before the reply.
- ``/admin``: readers' progress and invitations, behind the study's admin token; ``/admin/report``: the report
  of the answers so far (:class:`~cxr_monai.apps.study.report.StudyReport`), for the admin only.

Only files named in the manifest inside ``<study>/images`` are ever read for a reader (see
:meth:`~cxr_monai.apps.study.store.StudyStore.image_path`); the manifest, key, tokens and database are not served.

Example::

    app = create_app("studies/ce_2afc")
    app.run(port=8050)  # or `python -m cxr_monai study serve --study studies/ce_2afc`
"""

from __future__ import annotations

import hmac
import os
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flask import Flask, abort, jsonify, make_response, redirect, render_template, request, session, url_for
from PIL import Image

from cxr_monai.apps.study.store import AnswerConflict, Reader, StudyStore

__all__ = ["create_app", "read_study_image"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@lru_cache(maxsize=64)
def read_study_image(path: Path) -> tuple[int, int, bytes]:
    """(width, height, little-endian uint16 pixels) of a study PNG (16-bit grey; 8-bit is widened)."""
    with Image.open(path) as image:
        array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"{path}: a study image must be one grey channel, got shape {array.shape}.")
    if array.dtype == np.uint8:
        array = array.astype(np.uint16) * 257
    array = array.astype("<u2", copy=False)
    return int(array.shape[1]), int(array.shape[0]), array.tobytes()


def _secret(study_dir: Path, name: str) -> str:
    path = study_dir / name
    if not path.is_file():
        raise ValueError(f"{path}: missing; the study folder was not made by `study create` or lost a file.")
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path}: empty.")
    return value


def create_app(
    study_dir: str | os.PathLike,
    database_url: str | None = None,
    admin_token: str | None = None,
    allow_names: bool = True,
) -> Flask:
    """The Flask app of the study in ``study_dir``.

    Args:
        database_url: SQLAlchemy URL of the answers' database; default the study's SQLite file.
        admin_token: the admin page's token; default the study's ``admin_token`` file.
        allow_names: a reader may log in by typing a name (new or known); ``False``: only by invitation.
    """
    study_dir = Path(study_dir)
    store = StudyStore(study_dir, database_url)
    admin_token = admin_token or _secret(study_dir, "admin_token")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret(study_dir, "secret_key"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.extensions["cxr_monai_study"] = store
    manifest = store.manifest

    def current_reader() -> Reader | None:
        if session.get("study") != store.study_id or "reader" not in session:
            return None
        return store.reader_by_id(session["reader"])

    def reader_required(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            reader = current_reader()
            if reader is None:
                return jsonify(error="not logged in"), 401
            return view(reader, *args, **kwargs)
        return wrapper

    def log_in(reader: Reader) -> None:
        session.clear()
        session.update(study=store.study_id, reader=reader.id)

    @app.after_request
    def secure(response: Any) -> Any:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith(("/api/", "/admin")):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Any:
        reader = current_reader()
        if reader is None:
            return render_template("login.html", manifest=manifest, allow_names=allow_names, error=None)
        return render_template("study.html", manifest=manifest, reader=reader)

    @app.post("/login")
    def login() -> Any:
        given = (request.form.get("name_or_token") or "").strip()
        reader = store.reader_by_token(given)
        if reader is None and allow_names and given:
            try:
                reader = store.login(given)
            except ValueError as error:
                return render_template("login.html", manifest=manifest, allow_names=allow_names, error=str(error)), 400
        if reader is None:
            message = "Unknown invitation token." if not allow_names else "Enter your name or invitation token."
            return render_template("login.html", manifest=manifest, allow_names=allow_names, error=message), 403
        log_in(reader)
        return redirect(url_for("index"))

    @app.get("/invite/<token>")
    def invitation(token: str) -> Any:
        reader = store.reader_by_token(token)
        if reader is None:
            return render_template("login.html", manifest=manifest, allow_names=allow_names,
                                   error="This invitation is not valid (any more)."), 403
        log_in(reader)
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("index"))

    def state(reader: Reader) -> dict[str, Any]:
        progress = store.progress(reader)
        two_sided = manifest["design"] == "2afc"
        return {
            "design": manifest["design"], "title": manifest.get("title", ""), "reader": reader.name,
            "answered": progress.answered, "total": progress.total, "presentation": progress.next_presentation,
            "done": progress.next_presentation is None,
            "slots": ["left", "right"] if two_sided else ["image"],
            "choices": list(store.choices),
        }

    @app.get("/api/state")
    @reader_required
    def api_state(reader: Reader) -> Any:
        return jsonify(state(reader))

    @app.get("/api/image/<int:number>/<slot>")
    @reader_required
    def api_image(reader: Reader, number: int, slot: str) -> Any:
        if number != store.progress(reader).next_presentation:
            abort(404)  # only the showing being read: no looking ahead, no going back
        try:
            path = store.image_path(reader, number, slot)
        except (KeyError, IndexError):
            abort(404)
        width, height, pixels = read_study_image(path)
        response = make_response(pixels)
        response.headers.update({"Content-Type": "application/octet-stream", "X-Image-Width": str(width),
                                 "X-Image-Height": str(height)})
        return response

    @app.post("/api/answer")
    @reader_required
    def api_answer(reader: Reader) -> Any:
        body = request.get_json(silent=True)  # JSON only: a cross-site form cannot post it
        if not isinstance(body, dict):
            return jsonify(error="send a JSON object"), 400
        try:
            store.record_answer(reader, int(body["presentation"]), str(body["choice"]), float(body["response_ms"]))
        except AnswerConflict as error:
            return jsonify(error=str(error), state=state(reader)), 409
        except (KeyError, TypeError, ValueError, IndexError) as error:
            return jsonify(error=f"bad answer: {error}"), 400
        return jsonify(state(reader))

    def is_admin() -> bool:
        return session.get("admin") == store.study_id

    @app.route("/admin", methods=["GET", "POST"])
    def admin() -> Any:
        if request.method == "POST" and "admin_token" in request.form:
            if not hmac.compare_digest(request.form["admin_token"].encode(), admin_token.encode()):
                return render_template("admin_login.html", manifest=manifest, error="Wrong admin token."), 403
            session.clear()
            session["admin"] = store.study_id
            return redirect(url_for("admin"))
        if not is_admin():
            return render_template("admin_login.html", manifest=manifest, error=None)
        invited = None
        if request.method == "POST" and request.form.get("invite"):
            name = request.form["invite"].strip()
            invited = {"name": name, "url": url_for("invitation", token=store.invite(name), _external=True)}
        return render_template("admin.html", manifest=manifest, readers=store.readers(), invited=invited)

    @app.get("/admin/report")
    def admin_report() -> Any:
        if not is_admin():
            return redirect(url_for("admin"))
        from cxr_monai.apps.study.report import StudyReport

        report = StudyReport.from_answers(manifest, store.answers(), readers=[r["name"] for r in store.readers()])
        return report.html(stylesheet_href=url_for("static", filename="study.css"),
                           links=[("Back to the admin page", url_for("admin"))])

    @app.errorhandler(404)
    def not_found(_: Any) -> Any:
        return jsonify(error="not found"), 404

    return app
