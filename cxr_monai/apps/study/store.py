"""The study's database: readers and their answers, each answer committed the moment it is given.

SQLAlchemy Core over SQLite (``<study>/study.db``, the default) or any URL SQLAlchemy takes, e.g. a PostgreSQL
server shared by several studies (``postgresql+psycopg://user@host/db``; install ``psycopg``). Rows carry the
study's id (a digest of its ``study.json``), so one database can hold many studies and a changed manifest never
mixes with the answers given to the old one.

What a reader sees is decided here, not in the browser: :func:`reader_schedule` draws each reader's trial order,
the side of the original in a 2AFC pair and the positions of the repeated trials from the study's seed and the
reader's name, so a reader who reloads, changes browser or comes back next week continues the same sequence, and
the researcher can recompute it.

Example::

    store = StudyStore("studies/ce_2afc")
    reader = store.login("R1")
    state = store.progress(reader)         # the next presentation to show
    store.record_answer(reader, state.next_presentation, "left", response_ms=1830.0)
    store.answers()                        # every answer, with whether it was correct
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from cxr_monai.apps.study.create import validate_manifest

__all__ = [
    "AnswerConflict",
    "Presentation",
    "Progress",
    "Reader",
    "StudyStore",
    "load_manifest",
    "reader_schedule",
    "study_id",
]

CHOICES = {"2afc": ("left", "right"), "real_or_synthetic": ("real", "synthetic")}
#: Fewest other trials between a trial and its repeat, so that the repeat is not recognised at once.
REPEAT_GAP = 3

_metadata = sa.MetaData()
readers_table = sa.Table(
    "study_readers", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.String(32), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token", sa.String(100), nullable=True, unique=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.UniqueConstraint("study_id", "name", name="one_reader_per_name"),
)
answers_table = sa.Table(
    "study_answers", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.String(32), nullable=False, index=True),
    sa.Column("reader_id", sa.Integer, sa.ForeignKey("study_readers.id"), nullable=False),
    sa.Column("presentation", sa.Integer, nullable=False),
    sa.Column("trial", sa.String(100), nullable=False),
    sa.Column("repeat", sa.Boolean, nullable=False),
    sa.Column("choice", sa.String(20), nullable=False),
    sa.Column("original_side", sa.String(10), nullable=True),
    sa.Column("response_ms", sa.Float, nullable=False),
    sa.Column("answered_at", sa.String(40), nullable=False),
    sa.UniqueConstraint("study_id", "reader_id", "presentation", name="one_answer_per_presentation"),
)


def load_manifest(study_dir: str | os.PathLike) -> dict[str, Any]:
    """``<study_dir>/study.json``, validated; a missing or broken file is a ``ValueError`` naming it."""
    path = Path(study_dir) / "study.json"
    if not path.is_file():
        raise ValueError(f"{path}: no study manifest here; make the study with `python -m cxr_monai study create`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the study manifest ({error}).") from error
    validate_manifest(manifest, path)
    return manifest


def study_id(study_dir: str | os.PathLike) -> str:
    """The first 32 hex digits of the sha256 of ``study.json``: the key of the study's rows in the database."""
    return hashlib.sha256((Path(study_dir) / "study.json").read_bytes()).hexdigest()[:32]


@dataclass(frozen=True)
class Presentation:
    """One showing of a trial to a reader: which trial, whether it is the repeat, and (2AFC) the original's side."""

    trial: str
    repeat: bool
    original_side: str | None


def _reader_rng(seed: int, reader: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{reader}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def reader_schedule(manifest: dict[str, Any], reader: str) -> list[Presentation]:
    """The sequence of showings for ``reader``: every trial once in an order drawn from (seed, reader), then
    ``repeats`` of them shown again, each at least ``REPEAT_GAP`` showings after its first; 2AFC sides drawn per
    showing.

    >>> manifest = {"design": "2afc", "seed": 0, "repeats": 1,
    ...             "trials": [{"id": f"t{i}"} for i in range(6)]}
    >>> schedule = reader_schedule(manifest, "R1")
    >>> len(schedule), sum(p.repeat for p in schedule)
    (7, 1)
    >>> schedule == reader_schedule(manifest, "R1")
    True
    """
    rng = _reader_rng(int(manifest.get("seed", 0)), reader)
    ids = [trial["id"] for trial in manifest["trials"]]
    order = [ids[i] for i in rng.permutation(len(ids))]
    sequence = [(trial, False) for trial in order]
    repeats = int(manifest.get("repeats", 0))
    for trial in [order[i] for i in rng.choice(len(order), size=repeats, replace=False)]:
        first = next(k for k, (t, repeat) in enumerate(sequence) if t == trial and not repeat)
        earliest = min(first + 1 + REPEAT_GAP, len(sequence))
        sequence.insert(int(rng.integers(earliest, len(sequence) + 1)), (trial, True))
    two_sided = manifest["design"] == "2afc"
    return [Presentation(trial, repeat, str(rng.choice(("left", "right"))) if two_sided else None)
            for trial, repeat in sequence]


@dataclass(frozen=True)
class Reader:
    id: int
    name: str


@dataclass(frozen=True)
class Progress:
    """Where a reader stands: ``answered`` of ``total`` showings; ``next_presentation`` is None when done."""

    answered: int
    total: int
    next_presentation: int | None


class AnswerConflict(ValueError):
    """An answer for a showing that is not the reader's next one, or a second, different answer to one."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StudyStore:
    """Readers and answers of the study in ``study_dir`` (see the module docstring).

    Args:
        study_dir: the folder ``study create`` made.
        database_url: a SQLAlchemy URL; default ``sqlite:///<study_dir>/study.db``.
    """

    def __init__(self, study_dir: str | os.PathLike, database_url: str | None = None) -> None:
        self.study_dir = Path(study_dir)
        self.manifest = load_manifest(self.study_dir)
        self.study_id = study_id(self.study_dir)
        self.trials = {trial["id"]: trial for trial in self.manifest["trials"]}
        self.choices = CHOICES[self.manifest["design"]]
        url = database_url or f"sqlite:///{(self.study_dir / 'study.db').resolve()}"
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            # A reader's answer waits for another's write instead of failing with "database is locked".
            sa.event.listen(self.engine, "connect", lambda connection, _: connection.execute("PRAGMA busy_timeout = 10000"))
        _metadata.create_all(self.engine)
        self._schedules: dict[str, list[Presentation]] = {}

    # readers
    def login(self, name: str, create: bool = True) -> Reader:
        """The reader called ``name``, created when new and ``create``; ``KeyError`` otherwise."""
        name = name.strip()
        if not name or len(name) > 200:
            raise ValueError("a reader's name must have 1 to 200 characters.")
        try:
            with self.engine.begin() as connection:
                row = connection.execute(sa.select(readers_table.c.id, readers_table.c.name).where(
                    readers_table.c.study_id == self.study_id, readers_table.c.name == name)).first()
                if row is not None:
                    return Reader(int(row.id), row.name)
                if not create:
                    raise KeyError(name)
                result = connection.execute(readers_table.insert().values(
                    study_id=self.study_id, name=name, created_at=_now()))
                return Reader(int(result.inserted_primary_key[0]), name)
        except IntegrityError:  # created by a simultaneous login of the same name; this transaction rolled back
            return self.login(name, create=False)

    def invite(self, name: str) -> str:
        """A new invitation token for the reader ``name`` (created if new); a second invitation replaces the first."""
        reader = self.login(name)
        token = secrets.token_urlsafe(18)
        with self.engine.begin() as connection:
            connection.execute(readers_table.update().where(readers_table.c.id == reader.id).values(token=token))
        return token

    def reader_by_token(self, token: str) -> Reader | None:
        if not token:
            return None
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(readers_table.c.id, readers_table.c.name).where(
                readers_table.c.study_id == self.study_id, readers_table.c.token == token)).first()
        return None if row is None else Reader(int(row.id), row.name)

    def reader_by_id(self, reader_id: int) -> Reader | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(readers_table.c.id, readers_table.c.name).where(
                readers_table.c.study_id == self.study_id, readers_table.c.id == int(reader_id))).first()
        return None if row is None else Reader(int(row.id), row.name)

    def readers(self) -> list[dict[str, Any]]:
        """Every reader with the number of answers given and whether an invitation is open."""
        count = sa.func.count(answers_table.c.id)
        query = (sa.select(readers_table.c.name, readers_table.c.created_at, readers_table.c.token, count.label("n"))
                 .select_from(readers_table.outerjoin(answers_table, answers_table.c.reader_id == readers_table.c.id))
                 .where(readers_table.c.study_id == self.study_id)
                 .group_by(readers_table.c.id, readers_table.c.name, readers_table.c.created_at, readers_table.c.token)
                 .order_by(readers_table.c.name))
        with self.engine.connect() as connection:
            return [{"name": row.name, "created_at": row.created_at, "invited": row.token is not None,
                     "answers": int(row.n), "total": len(self.schedule(row.name))}
                    for row in connection.execute(query)]

    # showings and answers
    def schedule(self, reader_name: str) -> list[Presentation]:
        if reader_name not in self._schedules:
            self._schedules[reader_name] = reader_schedule(self.manifest, reader_name)
        return self._schedules[reader_name]

    def progress(self, reader: Reader) -> Progress:
        total = len(self.schedule(reader.name))
        with self.engine.connect() as connection:
            answered = connection.execute(sa.select(sa.func.count()).select_from(answers_table).where(
                answers_table.c.study_id == self.study_id, answers_table.c.reader_id == reader.id)).scalar_one()
        return Progress(int(answered), total, int(answered) if answered < total else None)

    def presentation(self, reader: Reader, number: int) -> Presentation:
        schedule = self.schedule(reader.name)
        if not 0 <= number < len(schedule):
            raise IndexError(f"showing {number} is outside 0..{len(schedule) - 1}")
        return schedule[number]

    def record_answer(self, reader: Reader, number: int, choice: str, response_ms: float) -> Progress:
        """Commit ``choice`` for showing ``number``; it must be the reader's next showing. Sending the same answer
        again (a retry after a lost response) is accepted once more without a second row; a different answer to an
        answered showing, or an answer ahead of the sequence, raises :class:`AnswerConflict`."""
        if choice not in self.choices:
            raise ValueError(f"choice must be one of {self.choices}, got {choice!r}.")
        response_ms = float(response_ms)
        if not np.isfinite(response_ms) or response_ms < 0:
            raise ValueError(f"response_ms must be a non-negative number of milliseconds, got {response_ms}.")
        shown = self.presentation(reader, number)
        with self.engine.begin() as connection:
            previous = connection.execute(sa.select(answers_table.c.choice).where(
                answers_table.c.study_id == self.study_id, answers_table.c.reader_id == reader.id,
                answers_table.c.presentation == number)).first()
            if previous is not None:
                if previous.choice != choice:
                    raise AnswerConflict(f"showing {number} was already answered '{previous.choice}'; answers "
                                         "cannot be changed.")
                return self.progress(reader)
            answered = connection.execute(sa.select(sa.func.count()).select_from(answers_table).where(
                answers_table.c.study_id == self.study_id, answers_table.c.reader_id == reader.id)).scalar_one()
            if number != answered:
                raise AnswerConflict(f"showing {number} is not the next one ({answered}).")
            try:
                connection.execute(answers_table.insert().values(
                    study_id=self.study_id, reader_id=reader.id, presentation=number, trial=shown.trial,
                    repeat=shown.repeat, choice=choice, original_side=shown.original_side, response_ms=response_ms,
                    answered_at=_now()))
            except IntegrityError as error:  # the same showing answered at the same moment from two tabs
                raise AnswerConflict(f"showing {number} was answered at the same time elsewhere.") from error
        return self.progress(reader)

    def answers(self) -> list[dict[str, Any]]:
        """Every answer of the study, by reader name then showing, with ``correct`` and (real or synthetic)
        ``called_real`` worked out from the manifest (the record format of :mod:`cxr_monai.apps.study.report`)."""
        query = (sa.select(readers_table.c.name, answers_table)
                 .join(readers_table, answers_table.c.reader_id == readers_table.c.id)
                 .where(answers_table.c.study_id == self.study_id)
                 .order_by(readers_table.c.name, answers_table.c.presentation))
        records = []
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                trial = self.trials.get(row.trial)
                if trial is None:
                    raise ValueError(f"{self.study_dir}: reader {row.name!r} answered trial {row.trial!r}, which "
                                     "study.json does not have.")
                if self.manifest["design"] == "2afc":
                    called_real, correct = None, row.choice == row.original_side
                else:
                    called_real = row.choice == "real"
                    correct = called_real == (trial["truth"] == "real")
                records.append({"reader": row.name, "trial": row.trial, "presentation": int(row.presentation),
                                "repeat": bool(row.repeat), "choice": row.choice, "original_side": row.original_side,
                                "correct": bool(correct), "called_real": called_real,
                                "response_ms": float(row.response_ms), "answered_at": row.answered_at})
        return records

    def image_path(self, reader: Reader, number: int, slot: str) -> Path:
        """The file of ``slot`` (``left``/``right`` in a 2AFC pair, ``image`` otherwise) of showing ``number``.

        Only names listed in the manifest resolve, and only inside ``<study>/images``: nothing else of the
        study folder (manifest, key, tokens, database) can be reached through a showing."""
        shown = self.presentation(reader, number)
        images = self.trials[shown.trial]["images"]
        if shown.original_side is None:
            if slot != "image":
                raise KeyError(slot)
            relative = images["image"]
        else:
            if slot not in ("left", "right"):
                raise KeyError(slot)
            relative = images["original"] if slot == shown.original_side else images["inpainted"]
        folder = (self.study_dir / "images").resolve()
        path = (self.study_dir / relative).resolve()
        if path.parent != folder:
            raise KeyError(f"{relative} is not in the study's images folder")
        return path
