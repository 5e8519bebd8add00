"""Disease localisation with a detector, seed 002's protocol (Xing et al. 2019, Table 2): correct localisation (CL)
of the boxes of a Faster R-CNN at IoU (and IoBB) T per class, evaluated every ``eval_every`` training steps, and
CL@s as the best model within s +- window steps (:mod:`cxr_monai.apps.localisation.report` has the rules); Table 2
from one command (:mod:`cxr_monai.apps.localisation.table`, ``python -m cxr_monai localisation-table``); a trained
detector's boxes on any list of radiographs (:class:`DetectionInference`, the bundle's ``inference.json``).

The names below are imported on first use (module ``__getattr__``), so ``python -m cxr_monai localisation-table``
imports its table module without torch and MONAI, and a second call that finds every step finished returns at
once; ``from cxr_monai.apps.localisation import LocalisationHistory`` works as before.

Example::

    from cxr_monai.apps.localisation import LocalisationHistory

    LocalisationHistory(evaluator, "runs/localisation/localisation", class_names, report_steps=[5000, 10000, 15000],
                        window=500, network=network, model_dir="runs/localisation/models").attach(trainer)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static tools see the eager imports
    from cxr_monai.apps.localisation.data import detection_datalist
    from cxr_monai.apps.localisation.handlers import (
        DetectorLocalisationEvaluation,
        LocalisationHistory,
        detection_overlay,
    )
    from cxr_monai.apps.localisation.inference import (
        DETECTION_FIELDS,
        DetectionInference,
        boxes_to_stored_pixels,
    )
    from cxr_monai.apps.localisation.report import (
        SEED_CLASSES,
        DetectorLocalisationReport,
        cl_table,
        cl_table_markdown,
        class_mean,
        detection_records,
        predicted_boxes,
        predicted_detections,
        select_in_window,
    )
    from cxr_monai.apps.localisation.table import LocalisationTable, merge_cl_tables

# public name -> the submodule that defines it
_LAZY = {
    "detection_datalist": "cxr_monai.apps.localisation.data",
    **dict.fromkeys(("DetectorLocalisationEvaluation", "LocalisationHistory", "detection_overlay"),
                    "cxr_monai.apps.localisation.handlers"),
    **dict.fromkeys(("DETECTION_FIELDS", "DetectionInference", "boxes_to_stored_pixels"),
                    "cxr_monai.apps.localisation.inference"),
    **dict.fromkeys(("SEED_CLASSES", "DetectorLocalisationReport", "cl_table", "cl_table_markdown", "class_mean",
                     "detection_records", "predicted_boxes", "predicted_detections", "select_in_window"),
                    "cxr_monai.apps.localisation.report"),
    **dict.fromkeys(("LocalisationTable", "merge_cl_tables"), "cxr_monai.apps.localisation.table"),
}

__all__ = [
    "DETECTION_FIELDS",
    "SEED_CLASSES",
    "DetectionInference",
    "DetectorLocalisationEvaluation",
    "DetectorLocalisationReport",
    "LocalisationHistory",
    "LocalisationTable",
    "boxes_to_stored_pixels",
    "cl_table",
    "cl_table_markdown",
    "class_mean",
    "detection_datalist",
    "detection_overlay",
    "detection_records",
    "merge_cl_tables",
    "predicted_boxes",
    "predicted_detections",
    "select_in_window",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups (and mock.patch) see a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
