"""Disease localisation with a detector, seed 002's protocol (Xing et al. 2019, Table 2): correct localisation (CL)
of the boxes of a Faster R-CNN at IoU (and IoBB) T per class, evaluated every ``eval_every`` training steps, and
CL@s as the best model within s +- window steps (:mod:`cxr_monai.apps.localisation.report` has the rules); Table 2
from one command (:mod:`cxr_monai.apps.localisation.table`, ``python -m cxr_monai localisation-table``).

Example::

    from cxr_monai.apps.localisation import LocalisationHistory

    LocalisationHistory(evaluator, "runs/localisation/localisation", class_names, report_steps=[5000, 10000, 15000],
                        window=500, network=network, model_dir="runs/localisation/models").attach(trainer)
"""

from __future__ import annotations

from cxr_monai.apps.localisation.data import detection_datalist
from cxr_monai.apps.localisation.handlers import (
    DetectorLocalisationEvaluation,
    LocalisationHistory,
)
from cxr_monai.apps.localisation.report import (
    SEED_CLASSES,
    DetectorLocalisationReport,
    cl_table,
    cl_table_markdown,
    class_mean,
    detection_records,
    predicted_boxes,
    select_in_window,
)
from cxr_monai.apps.localisation.table import LocalisationTable, merge_cl_tables

__all__ = [
    "SEED_CLASSES",
    "DetectorLocalisationEvaluation",
    "DetectorLocalisationReport",
    "LocalisationHistory",
    "LocalisationTable",
    "cl_table",
    "cl_table_markdown",
    "class_mean",
    "detection_datalist",
    "detection_records",
    "merge_cl_tables",
    "predicted_boxes",
    "select_in_window",
]
