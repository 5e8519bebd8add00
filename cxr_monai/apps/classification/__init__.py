"""Multi-label chest X-ray classification (seed 003 §3.3, Table 1): the evaluation of one model / input variant
(per-class AUROC and macro mean with bootstrap CIs, ROC curves, MLflow), the merge of several variants into one
Table 1 and the bundle runs of all its rows from one command (:class:`ClassifierTable`), and the radiologist-assist triage screen (CAM overlays of the top classes at the stored size, a worklist
ranked by a normal/abnormal score).

The network is :class:`cxr_monai.networks.CXRDenseNet121` (logits out); training and inference run on MONAI's
``SupervisedTrainer`` and ``SupervisedEvaluator`` (``bundles/classifier``).

Example::

    from cxr_monai.apps.classification import ClassificationEvaluation, TriageWriter
    from cxr_monai.data import datalist_label_names

    names = datalist_label_names("chexpert.json")
    ClassificationEvaluation("runs/dn121_grey/evaluation", names, "DN-121 (grey)").attach(evaluator)
    TriageWriter("runs/dn121_grey/triage", names, network, datalist="chexpert.json").attach(evaluator)
"""

from __future__ import annotations

from cxr_monai.apps.classification.evaluation import (
    ClassificationEvaluation,
    ClassificationReport,
    auroc_from_dict,
    merge_auroc_tables,
)
from cxr_monai.apps.classification.heatmaps import HEATMAP_METHODS, ClassHeatmaps, resize_heatmap
from cxr_monai.apps.classification.localisation import (
    CHESTXRAY8_HEATMAP_THRESHOLDS,
    LocalisationEvaluation,
    LocalisationReport,
)
from cxr_monai.apps.classification.outputs import (
    ABNORMAL_SCORES,
    NOT_ABNORMAL,
    TriageWriter,
    abnormal_score,
    class_file_name,
    gather_rows,
    labels_of,
    probabilities_of,
)
from cxr_monai.apps.classification.variants import (
    TABLE1_VARIANTS,
    ClassifierTable,
    Variant,
    parse_variant,
)

__all__ = [
    "ABNORMAL_SCORES",
    "CHESTXRAY8_HEATMAP_THRESHOLDS",
    "HEATMAP_METHODS",
    "NOT_ABNORMAL",
    "TABLE1_VARIANTS",
    "ClassHeatmaps",
    "ClassificationEvaluation",
    "ClassificationReport",
    "ClassifierTable",
    "LocalisationEvaluation",
    "LocalisationReport",
    "TriageWriter",
    "Variant",
    "abnormal_score",
    "auroc_from_dict",
    "class_file_name",
    "gather_rows",
    "labels_of",
    "merge_auroc_tables",
    "parse_variant",
    "probabilities_of",
    "resize_heatmap",
]
