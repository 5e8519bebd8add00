"""Pneumothorax detection and localisation with ClaSegNet (seed 004): the evaluation that gives the seed's comparison
table (ClaSegNet vs the plain ResNet-50: accuracy, precision, recall, AUC, Dice, confusion matrix, with CIs) and its
TP/FP/FN/TN examples, and the inference writer (localisation maps and masks at the stored size, SIIM's submission
CSV).

The network is :class:`cxr_monai.networks.ClaSegNet`; training and inference run on MONAI's ``SupervisedTrainer``
and ``SupervisedEvaluator`` (``bundles/clasegnet``).

Example::

    from cxr_monai.apps.pneumothorax import PneumothoraxEvaluation, PneumothoraxWriter

    PneumothoraxEvaluation("runs/clasegnet/evaluation", "ClaSegNet").attach(evaluator)
    PneumothoraxWriter("runs/clasegnet/inference", datalist="siim.json").attach(evaluator)
"""

from __future__ import annotations

from cxr_monai.apps.pneumothorax.compare import (
    CLASEGNET_ROWS,
    ClaSegNetTable,
    parse_row,
)
from cxr_monai.apps.pneumothorax.evaluation import (
    OUTCOMES,
    PneumothoraxEvaluation,
    PneumothoraxReport,
    detection_table,
    image_scores,
    merge_detection_tables,
    outputs_of,
)
from cxr_monai.apps.pneumothorax.outputs import PneumothoraxWriter

__all__ = [
    "CLASEGNET_ROWS",
    "OUTCOMES",
    "ClaSegNetTable",
    "PneumothoraxEvaluation",
    "PneumothoraxReport",
    "PneumothoraxWriter",
    "detection_table",
    "image_scores",
    "merge_detection_tables",
    "outputs_of",
    "parse_row",
]
