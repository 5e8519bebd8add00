"""The report of an observer study: per reader and pooled accuracy with exact CIs and tests against chance, the
images called real per source and pathology (seed 002's Table 1 layout), response times and rater agreement.

**What counts.** Accuracy, response times and the called-real counts use each reader's *first* showing of every
trial (``repeat`` False); the second showings of repeated trials feed intra-reader agreement only. The outcome
of a trial is binary: *picked the original* in a 2AFC study (chance 50 %, seed 001's expert: 59.45 % correct),
*called real* in a real-or-synthetic study (seed 002: R1|R2 called 108|45 of 150 Pix2Pix-N images real).

**Pooled** rows pool every reader's first answers as if they were independent, so their CI is too narrow when
readers differ; the mean of the per-reader % correct is given beside them.

**Agreement** on that outcome: Cohen's κ for every pair of readers over the trials both answered, Fleiss' κ over
the trials answered by every reader who answered at all, and per reader Cohen's κ between the first and the
repeated showing.

Example::

    report = StudyReport.from_answers(load_manifest(study), StudyStore(study).answers())
    report.write(study / "report")   # report.json, report.md, answers.csv
    log_report_to_mlflow(report, "sqlite:////abs/study/report/mlruns.db", "observer_study", run_name="study-report")

``cxr_monai.reports`` (which imports MONAI and torch) and the store are imported where they are used, so that
building the ``study`` command's parser stays light.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cxr_monai.apps.study.stats import binomial_summary, cohen_kappa, fleiss_kappa, percent_agreement

__all__ = ["ANSWER_FIELDS", "DESIGNS", "ReportSection", "ReportTable", "StudyReport", "add_report_arguments",
           "metric_names", "run_report"]

#: design -> what the binary outcome of a trial is.
DESIGNS = {"2afc": "picked the original", "real_or_synthetic": "called real"}
CHANCE = 0.5
CONFIDENCE = 0.95
#: The columns of ``answers.csv``: the store's answer fields with the trial's group, label and truth.
ANSWER_FIELDS = ("reader", "trial", "presentation", "repeat", "group", "label", "truth", "choice", "original_side",
                 "correct", "called_real", "response_ms", "answered_at")
_CHOICES = {"2afc": ("left", "right"), "real_or_synthetic": ("real", "synthetic")}
_NO_LABEL = "(no label)"


def metric_names(names: Iterable[str]) -> dict[str, str]:
    """Each name made safe for a metric key (``[A-Za-z0-9_]``), distinct ones kept distinct by a suffix.

    >>> metric_names(["R1", "Dr. Smith", "Dr_Smith", "Pix2Pix-N"])
    {'R1': 'R1', 'Dr. Smith': 'Dr__Smith', 'Dr_Smith': 'Dr_Smith', 'Pix2Pix-N': 'Pix2Pix_N'}
    """
    names = list(dict.fromkeys(names))
    # names that are already safe keep their key; the others take the next free one
    taken = {name for name in names if re.fullmatch(r"[A-Za-z0-9_]+", name)}
    keys: dict[str, str] = {}
    for name in names:
        if name in taken:
            keys[name] = name
            continue
        base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "_"
        key, suffix = base, 2
        while key in taken:
            key, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(key)
        keys[name] = key
    return keys


def _response_times(milliseconds: Sequence[Any]) -> dict[str, float]:
    """Median, quartiles, mean ± std (and the bootstrap CI of the mean) of response times, in seconds."""
    seconds = np.asarray([float(m) for m in milliseconds if m is not None and math.isfinite(float(m))]) / 1000.0
    if seconds.size == 0:
        return {"n": 0, **dict.fromkeys(("median", "q1", "q3", "mean", "std", "ci_low", "ci_high"), math.nan)}
    from cxr_monai.reports import summarize_metric

    summary = summarize_metric("response_time_s", seconds, confidence=CONFIDENCE, unit="answers")
    q1, q3 = np.percentile(seconds, [25, 75])
    return {"n": summary.n, "median": summary.median, "q1": float(q1), "q3": float(q3), "mean": summary.mean,
            "std": summary.std, "ci_low": summary.ci_low, "ci_high": summary.ci_high}


def _checked_answers(manifest: Mapping[str, Any], answers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The answers with their trial's group, label and truth, and the outcome recomputed from the choice; a
    ValueError names the reader and trial of an answer that does not fit the manifest."""
    design = manifest["design"]
    trials = {trial["id"]: trial for trial in manifest["trials"]}
    seen: set[tuple[str, str, bool]] = set()
    checked = []
    for answer in answers:
        reader, trial_id, repeat = str(answer["reader"]), str(answer["trial"]), bool(answer.get("repeat", False))
        where = f"answer of reader {reader!r} to trial {trial_id!r}"
        trial = trials.get(trial_id)
        if trial is None:
            raise ValueError(f"{where}: trial {trial_id!r} is not in the study's manifest")
        if (reader, trial_id, repeat) in seen:
            raise ValueError(f"{where}: reader {reader!r} answered the {'repeated' if repeat else 'first'} showing "
                             f"of trial {trial_id!r} twice")
        seen.add((reader, trial_id, repeat))
        choice = answer.get("choice")
        if choice not in _CHOICES[design]:
            raise ValueError(f"{where}: choice {choice!r} is not one of {_CHOICES[design]}")
        original_side, called_real, truth = answer.get("original_side"), None, trial.get("truth")
        if design == "2afc":
            if original_side not in ("left", "right"):
                raise ValueError(f"{where}: original_side {original_side!r} is not 'left' or 'right'")
            correct = choice == original_side
        else:
            if truth not in ("real", "synthetic"):
                raise ValueError(f"trial {trial_id!r} (answered by reader {reader!r}): truth {truth!r} is not "
                                 "'real' or 'synthetic'")
            called_real = choice == "real"
            correct = called_real == (truth == "real")
        if answer.get("correct") is not None and bool(answer["correct"]) != correct:
            raise ValueError(f"{where}: stored correct={answer['correct']} disagrees with the choice {choice!r} "
                             f"and the trial's truth")
        checked.append({"reader": reader, "trial": trial_id, "presentation": answer.get("presentation"),
                        "repeat": repeat, "group": trial.get("group", ""), "label": trial.get("label", ""),
                        "truth": truth, "choice": choice, "original_side": original_side, "correct": correct,
                        "called_real": called_real, "response_ms": answer.get("response_ms"),
                        "answered_at": answer.get("answered_at")})
    return checked


def _accuracy(answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    summary = binomial_summary(sum(a["correct"] for a in answers), len(answers), CHANCE, CONFIDENCE)
    return {**summary, "response_time_s": _response_times([a["response_ms"] for a in answers])}


def _pair_agreement(first: Mapping[str, bool], second: Mapping[str, bool], trial_order: Sequence[str]
                    ) -> dict[str, Any]:
    shared = [trial for trial in trial_order if trial in first and trial in second]
    a, b = [first[t] for t in shared], [second[t] for t in shared]
    return {"n": len(shared), "percent_agreement": percent_agreement(a, b), "kappa": cohen_kappa(a, b)}


def _sorted_groups(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """Source groups in manifest order, the groups of real images first (seed 002: Real Data, then generators)."""
    groups = list(dict.fromkeys(trial.get("group", "") for trial in trials))
    real = {trial.get("group", "") for trial in trials if trial.get("truth") == "real"}
    return sorted(groups, key=lambda group: group not in real)


@dataclass(frozen=True)
class ReportTable:
    """A table of the report, its cells as text: columns from ``numeric_from`` on are right-aligned, rows in
    ``emphasised`` (pooled, total) are set in bold in their ``emphasis_column``."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric_from: int = 1
    emphasised: frozenset[int] = frozenset()
    emphasis_column: int = 0


@dataclass(frozen=True)
class ReportSection:
    """A titled table with the notes before and after it."""

    title: str
    table: ReportTable
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    level: int = 2


@dataclass
class StudyReport:
    """Accuracy, called-real counts and agreement of an observer study (module docstring); build with
    :meth:`from_answers`. Percentages and their CIs are in percent, response times in seconds.

    ``accuracy``: reader -> :func:`~cxr_monai.apps.study.stats.binomial_summary` of the correct first answers
    with ``response_time_s``; ``pooled`` the same over all readers. ``called_real`` (real-or-synthetic only):
    group -> ``{"truth", "readers": {reader: summary}, "pooled": summary}``. ``pathology_table``: seed 002's
    Table 1 (``{"groups", "rows": {label: {group: "19|6"}}, "counts", "shown", "images"}``). ``agreement``:
    ``{"outcome", "inter", "fleiss", "intra"}``.
    """

    study: dict[str, Any]
    readers: list[str]
    answers: list[dict[str, Any]]
    accuracy: dict[str, dict[str, Any]]
    pooled: dict[str, Any]
    mean_reader_percent_correct: float
    agreement: dict[str, Any]
    called_real: dict[str, dict[str, Any]] = field(default_factory=dict)
    pathology_table: dict[str, Any] | None = None
    generated: str = ""

    @classmethod
    def from_answers(cls, manifest: Mapping[str, Any], answers: Iterable[Mapping[str, Any]],
                     readers: Sequence[str] | None = None, generated: str | None = None) -> StudyReport:
        """The report of ``answers`` (``StudyStore.answers()``) to the study ``manifest`` (``study.json``).

        ``readers`` lists readers to report even without answers (``StudyStore.readers()``' names); readers
        found only in the answers follow. ``generated`` is the report date shown (default: now, UTC).

        >>> manifest = {"design": "2afc", "title": "Demo", "trials": [
        ...     {"id": "t1", "images": {}, "group": "inpainted", "label": ""}]}
        >>> answer = {"reader": "R1", "trial": "t1", "repeat": False, "choice": "left", "original_side": "left"}
        >>> report = StudyReport.from_answers(manifest, [answer], readers=["R1", "R2"])
        >>> report.accuracy["R1"]["percent"], report.accuracy["R2"]["n"]
        (100.0, 0)
        """
        design = manifest.get("design")
        if design not in DESIGNS:
            raise ValueError(f"study design {design!r} is not one of {sorted(DESIGNS)}")
        trials = list(manifest["trials"])
        trial_order = [trial["id"] for trial in trials]
        checked = _checked_answers(manifest, answers)
        names = list(dict.fromkeys([*(str(r) for r in readers or ()), *(a["reader"] for a in checked)]))
        first = {name: [a for a in checked if a["reader"] == name and not a["repeat"]] for name in names}
        repeat = {name: [a for a in checked if a["reader"] == name and a["repeat"]] for name in names}
        outcome_key = "correct" if design == "2afc" else "called_real"
        outcomes = {name: {a["trial"]: a[outcome_key] for a in first[name]} for name in names}

        accuracy = {name: _accuracy(first[name]) for name in names}
        pooled = _accuracy([a for name in names for a in first[name]])
        answered = [name for name in names if first[name]]
        mean_reader = (float(np.mean([accuracy[name]["percent"] for name in answered])) if answered else math.nan)

        inter = [{"readers": [a, b], **_pair_agreement(outcomes[a], outcomes[b], trial_order)}
                 for a, b in itertools.combinations(names, 2)]
        fleiss: dict[str, Any] = {"readers": answered, "n": 0, "kappa": math.nan}
        if len(answered) >= 2:
            shared = [t for t in trial_order if all(t in outcomes[name] for name in answered)]
            called = [sum(outcomes[name][t] for name in answered) for t in shared]
            counts = [[len(answered) - c, c] for c in called]
            fleiss.update(n=len(shared), kappa=fleiss_kappa(counts) if shared else math.nan)
        intra = {name: _pair_agreement(outcomes[name], {a["trial"]: a[outcome_key] for a in repeat[name]},
                                       trial_order) for name in names}
        agreement = {"outcome": DESIGNS[design], "inter": inter, "fleiss": fleiss, "intra": intra}

        called_real: dict[str, dict[str, Any]] = {}
        table = None
        if design == "real_or_synthetic":
            groups = _sorted_groups(trials)
            for group in groups:
                truth = next(t.get("truth") for t in trials if t.get("group", "") == group)
                per_reader = {name: [a for a in first[name] if a["group"] == group] for name in names}
                called_real[group] = {
                    "truth": truth,
                    "readers": {name: binomial_summary(sum(a["called_real"] for a in shown), len(shown), CHANCE,
                                                       CONFIDENCE) for name, shown in per_reader.items()},
                    "pooled": binomial_summary(sum(a["called_real"] for shown in per_reader.values() for a in shown),
                                               sum(len(shown) for shown in per_reader.values()), CHANCE, CONFIDENCE)}
            table = _pathology_table(trials, groups, names, first)

        study = {"title": manifest.get("title") or "Observer study", "design": design,
                 "instructions": manifest.get("instructions", ""), "seed": manifest.get("seed"),
                 "repeats": manifest.get("repeats", 0), "created": manifest.get("created"), "trials": len(trials)}
        return cls(study=study, readers=names, answers=checked, accuracy=accuracy, pooled=pooled,
                   mean_reader_percent_correct=mean_reader, agreement=agreement, called_real=called_real,
                   pathology_table=table,
                   generated=generated or datetime.now(timezone.utc).isoformat(timespec="seconds"))

    # ------------------------------------------------------------------------------------------------------
    # outputs

    def metrics(self) -> dict[str, float]:
        """Flat finite values for MLflow: ``pooled_percent_correct``, ``pooled_ci_low``, ...,
        ``reader_<name>_percent_correct``, ``called_real_<group>``, ``kappa_<a>_vs_<b>``, ``fleiss_kappa``,
        ``intra_kappa_<name>`` (names through :func:`metric_names`); undefined values are left out."""
        readers = metric_names(self.readers)
        values: dict[str, float] = {}

        def accuracy(prefix: str, row: Mapping[str, Any]) -> None:
            values.update({f"{prefix}trials": row["n"], f"{prefix}correct": row["successes"],
                           f"{prefix}percent_correct": row["percent"], f"{prefix}ci_low": row["ci_low"],
                           f"{prefix}ci_high": row["ci_high"], f"{prefix}p_value": row["p_value"]})
            times = row["response_time_s"]
            values.update({f"{prefix}rt_{key}_s": times[key] for key in ("median", "q1", "q3", "mean", "std")})

        accuracy("pooled_", self.pooled)
        values["mean_reader_percent_correct"] = self.mean_reader_percent_correct
        for name, key in readers.items():
            accuracy(f"reader_{key}_", self.accuracy[name])
        for group, key in metric_names(self.called_real).items():
            entry = self.called_real[group]
            pooled = entry["pooled"]
            values.update({f"called_real_{key}": pooled["percent"], f"called_real_{key}_count": pooled["successes"],
                           f"called_real_{key}_n": pooled["n"], f"called_real_{key}_ci_low": pooled["ci_low"],
                           f"called_real_{key}_ci_high": pooled["ci_high"]})
            for name, reader_key in readers.items():
                row = entry["readers"][name]
                values[f"reader_{reader_key}_called_real_{key}"] = row["percent"]
                values[f"reader_{reader_key}_called_real_{key}_count"] = row["successes"]
        for pair in self.agreement["inter"]:
            key = "_vs_".join(readers[name] for name in pair["readers"])
            values.update({f"kappa_{key}": pair["kappa"], f"agreement_{key}": pair["percent_agreement"],
                           f"shared_trials_{key}": pair["n"]})
        values.update({"fleiss_kappa": self.agreement["fleiss"]["kappa"],
                       "fleiss_trials": self.agreement["fleiss"]["n"]})
        for name, key in readers.items():
            intra = self.agreement["intra"][name]
            values.update({f"intra_kappa_{key}": intra["kappa"], f"intra_agreement_{key}": intra["percent_agreement"],
                           f"intra_repeated_{key}": intra["n"]})
        return {key: float(value) for key, value in values.items() if math.isfinite(float(value))}

    def to_dict(self) -> dict[str, Any]:
        """Everything: the study, the method, every table and all answers (``report.json``)."""
        return {"study": self.study, "generated": self.generated, "readers": self.readers,
                "method": self.method_note(), "outcome": self.agreement["outcome"], "chance": CHANCE,
                "confidence": CONFIDENCE,
                "accuracy": {"readers": self.accuracy, "pooled": self.pooled,
                             "mean_reader_percent_correct": self.mean_reader_percent_correct,
                             "uses": "each reader's first showing of every trial"},
                "called_real": self.called_real, "pathology_table": self.pathology_table,
                "agreement": self.agreement, "answers": self.answers}

    def method_note(self) -> str:
        return (f"Exact (Clopper–Pearson) {CONFIDENCE * 100:g} % CIs; p-values from two-sided exact binomial tests "
                f"against chance ({CHANCE * 100:g} %). Accuracy, response times and counts use each reader's first "
                "showing of every trial; repeated showings feed intra-reader agreement only.")

    def header(self) -> list[tuple[str, str]]:
        """The report's header lines as (label, text): design, study, readers, date, method."""
        design = self.study["design"]
        answered = {name: sum(a["reader"] == name for a in self.answers) for name in self.readers}
        readers = ", ".join(f"{name} ({answered[name]} answers)" for name in self.readers) or "none"
        kind = ("2AFC: pick the original of two images (chance 50 %)" if design == "2afc" else
                "real or synthetic: call one image real or synthetic")
        return [("Design", kind),
                ("Study", f"{self.study['trials']} trials, seed {self.study['seed']}, {self.study['repeats']} repeated "
                          f"per reader; created {self.study['created'] or '-'}"),
                ("Readers", readers), ("Date", self.generated), ("Method", self.method_note())]

    def sections(self) -> list[ReportSection]:
        """The report's tables with their titles and notes, in order; :meth:`markdown` and :meth:`html` lay
        them out."""
        sections = [self._accuracy_section()]
        if self.study["design"] == "real_or_synthetic":
            sections += [self._called_real_section(), self._pathology_section()]
        return [*sections, *self._agreement_sections()]

    def markdown(self) -> str:
        """``report.md``: the header, the accuracy table, the called-real tables and the agreement tables."""
        lines = [f"# {_md(self.study['title'])}: observer study report", ""]
        lines += [f"- {label}: {_md(text)}" for label, text in self.header()]
        for section in self.sections():
            lines += ["", f"{'#' * section.level} {section.title}", ""]
            lines += [line for text in section.before for line in (text, "")]
            table = section.table
            lines.append("| " + " | ".join(_md(c) for c in table.columns) + " |")
            lines.append("|" + "".join("---|" if i < table.numeric_from else "---:|"
                                       for i in range(len(table.columns))))
            for number, row in enumerate(table.rows):
                cells = [_md(cell) for cell in row]
                if number in table.emphasised:
                    cells[table.emphasis_column] = f"**{cells[table.emphasis_column]}**"
                lines.append("| " + " | ".join(cells) + " |")
            lines += [line for text in section.after for line in ("", text)]
        return "\n".join(lines)

    def html(self, stylesheet_href: str | None = None, links: Sequence[tuple[str, str]] = ()) -> str:
        """The report as one HTML page (``report.html``, and the study app's ``/admin/report``): the
        study's stylesheet linked from ``stylesheet_href``, or embedded when None (a file that stands alone);
        ``links`` (text, href) go in the page's header."""
        import jinja2

        environment = jinja2.Environment(loader=jinja2.PackageLoader("cxr_monai.apps.study", "templates"),
                                         autoescape=True)
        stylesheet = None
        if stylesheet_href is None:
            stylesheet = (Path(__file__).parent / "static" / "study.css").read_text(encoding="utf-8")
        return environment.get_template("report.html").render(
            report=self, header=self.header(), sections=self.sections(), stylesheet=stylesheet,
            stylesheet_href=stylesheet_href, links=links)

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``report.json``, ``report.md``, ``report.html`` and ``answers.csv`` in ``output_dir``."""
        from cxr_monai.reports import write_csv, write_json, write_text

        output_dir = Path(output_dir)
        return {"report.json": write_json(self.to_dict(), output_dir / "report.json"),
                "report.md": write_text(self.markdown() + "\n", output_dir / "report.md"),
                "report.html": write_text(self.html(), output_dir / "report.html"),
                "answers.csv": write_csv(self.answers, output_dir / "answers.csv", ANSWER_FIELDS)}

    # ------------------------------------------------------------------------------------------------------
    # tables

    def _accuracy_section(self) -> ReportSection:
        rows = [*self.accuracy.items(), ("Pooled", self.pooled)]
        cells = []
        for name, row in rows:
            times = row["response_time_s"]
            cells.append((name, str(row["n"]), str(row["successes"]), _percent(row), _p(row["p_value"]),
                          f"{_num(times['median'], 2)} ({_num(times['q1'], 2)} to {_num(times['q3'], 2)})",
                          f"{_num(times['mean'], 2)} ± {_num(times['std'], 2)}"))
        table = ReportTable(("Reader", "trials", "correct", "% correct (95 % CI)", "p vs 50 %",
                             "response time median (IQR), s", "mean ± std, s"), tuple(cells), numeric_from=1,
                            emphasised=frozenset({len(cells) - 1}))
        return ReportSection("Accuracy (first showings)", table, after=(
            f"Mean of the readers' % correct: {_num(self.mean_reader_percent_correct, 1)} %. The pooled row treats "
            "all first answers as independent (answers of one reader, and to one trial, are not), so its CI is too "
            "narrow when readers differ.",))

    def _called_real_section(self) -> ReportSection:
        cells, emphasised = [], set()
        for group, entry in self.called_real.items():
            for name, row in [*entry["readers"].items(), ("Pooled", entry["pooled"])]:
                cells.append((group, entry["truth"], name, str(row["n"]), str(row["successes"]), _percent(row),
                              _p(row["p_value"])))
            emphasised.add(len(cells) - 1)
        table = ReportTable(("Source", "truth", "Reader", "shown", "called real", "% called real (95 % CI)",
                             "p vs 50 %"), tuple(cells), numeric_from=3, emphasised=frozenset(emphasised),
                            emphasis_column=2)
        return ReportSection("Called real per source (first showings)", table)

    def _pathology_section(self) -> ReportSection:
        table = self.pathology_table
        assert table is not None
        groups = table["groups"]
        cells = [(label, *(cells[g] for g in groups)) for label, cells in table["rows"].items()]
        cells.append(("Total", *(table["total"][g] for g in groups)))
        cells.append(("shown", *(table["shown"][g] for g in groups)))
        cells.append(("images", *(str(table["images"][g]) for g in groups)))
        return ReportSection(
            "Images called real per pathology and source (seed 002, Table 1)",
            ReportTable(("Pathology", *groups), tuple(cells), numeric_from=1,
                        emphasised=frozenset({len(cells) - 3})),
            before=(f"Each cell: the number of images called real by {'|'.join(self.readers)}.",),
            after=("'shown': images of the source each reader answered; 'images': the study's images of the "
                   "source.",))

    def _agreement_sections(self) -> list[ReportSection]:
        agreement = self.agreement
        pairs = tuple((" vs ".join(pair["readers"]), str(pair["n"]), _num(pair["percent_agreement"], 1),
                       _num(pair["kappa"], 3)) for pair in agreement["inter"]) or (("(one reader)", "0", "-", "-"),)
        fleiss = agreement["fleiss"]
        if len(fleiss["readers"]) >= 2:
            fleiss_note = (f"Fleiss' κ over the {fleiss['n']} trials answered by all {len(fleiss['readers'])} "
                           f"readers with answers: {_num(fleiss['kappa'], 3)}.")
        else:
            fleiss_note = "Fleiss' κ: needs at least two readers with answers."
        intra = tuple((name, str(row["n"]), _num(row["percent_agreement"], 1), _num(row["kappa"], 3))
                      for name, row in agreement["intra"].items())
        return [
            ReportSection("Agreement", ReportTable(("Readers", "shared trials", "% agreement", "Cohen's κ"), pairs,
                                                   numeric_from=1),
                          before=(f"On the binary outcome '{agreement['outcome']}', first showings.",),
                          after=(fleiss_note,)),
            ReportSection("Intra-reader (first vs repeated showing)",
                          ReportTable(("Reader", "repeated trials", "% agreement", "Cohen's κ"), intra,
                                      numeric_from=1),
                          level=3,
                          after=("κ is '-' where undefined: no shared trials, or both gave every trial the same "
                                 "outcome.",)),
        ]


def _pathology_table(trials: Sequence[Mapping[str, Any]], groups: Sequence[str], readers: Sequence[str],
                     first: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Seed 002's Table 1: per pathology label (rows) and source group (columns) the images each reader called
    real, joined with ``|`` in reader order ("19|6"), a Total row, and the images shown and in the study."""
    labels = list(dict.fromkeys(trial.get("label") or _NO_LABEL for trial in trials))
    counts = {label: {group: {name: 0 for name in readers} for group in groups} for label in labels}
    shown = {group: {name: 0 for name in readers} for group in groups}
    for name in readers:
        for answer in first[name]:
            shown[answer["group"]][name] += 1
            if answer["called_real"]:
                counts[answer["label"] or _NO_LABEL][answer["group"]][name] += 1
    total = {group: {name: sum(counts[label][group][name] for label in labels) for name in readers}
             for group in groups}

    def joined(per_reader: Mapping[str, int]) -> str:
        return "|".join(str(per_reader[name]) for name in readers)

    return {"groups": list(groups), "readers": list(readers),
            "rows": {label: {group: joined(counts[label][group]) for group in groups} for label in labels},
            "total": {group: joined(total[group]) for group in groups},
            "shown": {group: joined(shown[group]) for group in groups},
            "images": {group: sum(trial.get("group", "") == group for trial in trials) for group in groups},
            "counts": counts}


def _md(text: Any) -> str:
    """A markdown table cell: ``|`` escaped (so seed 002's "19|6" reads ``19\\|6`` in the source)."""
    return str(text).replace("|", "\\|")


def _num(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _percent(row: Mapping[str, Any]) -> str:
    if not row["n"]:
        return "-"
    return f"{row['percent']:.1f} ({row['ci_low']:.1f} to {row['ci_high']:.1f})"


# ----------------------------------------------------------------------------------------------------------
# command line


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """``study report --study DIR [--database URL] [--out DIR] [--mlflow-uri URI|none] [--experiment NAME]``."""
    parser.add_argument("--study", required=True, type=Path, metavar="DIR", help="the study folder (study.json)")
    parser.add_argument("--database", metavar="URL",
                        help="the answers' database (default: the study's SQLite, DIR/study.db)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where report.json, report.md and answers.csv go "
                                                                "(default: DIR/report)")
    parser.add_argument("--mlflow-uri", metavar="URI",
                        help="MLflow tracking URI (default: sqlite:///<out>/mlruns.db; 'none': do not log)")
    parser.add_argument("--experiment", default="observer_study", help="MLflow experiment (default observer_study)")


def run_report(args: argparse.Namespace) -> int:
    """``study report``: read the manifest and the answers, write the report, log it to MLflow, print the tables
    and the paths. A study or answers that do not fit raise ``ValueError`` (the ``study`` command prints it and
    exits 2)."""
    from cxr_monai.apps.study.store import StudyStore, load_manifest

    study = Path(args.study)
    manifest = load_manifest(study)
    store = StudyStore(study, database_url=args.database)
    report = StudyReport.from_answers(manifest, store.answers(), readers=[r["name"] for r in store.readers()])
    out = Path(args.out) if args.out is not None else study / "report"
    paths = report.write(out)
    print(report.markdown())
    for name, path in paths.items():
        print(f"{name}: {path}")
    uri = args.mlflow_uri
    if uri is None or uri.lower() != "none":
        from monai.utils import path_to_sqlite_uri

        from cxr_monai.reports import log_report_to_mlflow

        uri = uri or path_to_sqlite_uri(out.resolve() / "mlruns.db")
        run_id = log_report_to_mlflow(report, uri, experiment_name=args.experiment, run_name="study-report",
                                      files=paths)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or uri  # where log_report_to_mlflow logged
        print(f"MLflow: run {run_id} in experiment {args.experiment!r} of {uri}")
    return 0
