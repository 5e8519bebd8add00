"""Datalists (NIH ChestX-ray14, folders, Montgomery, Shenzhen, JSRT/SCR lung masks, bone-suppression pairs, CheXpert and
ChestX-ray14 classification labels, SIIM-ACR pneumothorax masks), their schema, the patch-pool loader and the phantom generator.

The names below are imported on first use (module ``__getattr__``), so importing one submodule (for example
``cxr_monai.data.phantom`` for ``python -m cxr_monai phantom``) does not import the others; ``from
cxr_monai.data import load_datalist`` works as before.

Example::

    from cxr_monai.data import load_datalist

    entries = load_datalist("datalist.json", "training", base_dir="/data/ChestX-ray14")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static tools see the eager imports
    from cxr_monai.data.builders.bone_pairs import build_bone_pair_datalist
    from cxr_monai.data.builders.classification import (
        CHESTXRAY14_CLASSES,
        CHEXPERT_CLASSES,
        build_chestxray14_datalist,
        build_chexpert_datalist,
    )
    from cxr_monai.data.builders.folder import build_folder_datalist
    from cxr_monai.data.builders.lung_masks import (
        build_jsrt_datalist,
        build_montgomery_datalist,
        build_shenzhen_datalist,
        lung_mask_problem,
        read_lung_mask,
    )
    from cxr_monai.data.builders.nih import build_nih_datalist
    from cxr_monai.data.builders.nih_boxes import NIH_BOXES_CLASSES, build_nih_boxes_datalist
    from cxr_monai.data.builders.siim import build_siim_datalist
    from cxr_monai.data.datalist import (
        DatalistError,
        DatalistSummary,
        datalist_label_names,
        image_file_problem,
        load_datalist,
        split_groups,
        validate_datalist,
    )
    from cxr_monai.data.patch_loader import PatchPoolDataLoader
    from cxr_monai.data.phantom import (
        CLASSIFICATION_FINDINGS,
        FINDINGS,
        PhantomLateral,
        PhantomLesion,
        PhantomRadiograph,
        PhantomSummary,
        generate_phantoms,
        make_phantom,
    )

_DATALIST = (
    "DatalistError",
    "DatalistSummary",
    "image_file_problem",
    "datalist_label_names",
    "load_datalist",
    "split_groups",
    "validate_datalist",
)
_LUNG_MASK_BUILDERS = (
    "build_jsrt_datalist",
    "build_montgomery_datalist",
    "build_shenzhen_datalist",
    "build_siim_datalist",
    "lung_mask_problem",
    "read_lung_mask",
)
_NIH_BUILDER = ("build_nih_datalist",)
_NIH_BOXES_BUILDER = ("NIH_BOXES_CLASSES", "build_nih_boxes_datalist")
_SIIM_BUILDER = ("build_siim_datalist",)
_FOLDER_BUILDER = ("build_folder_datalist",)
_BONE_PAIR_BUILDER = ("build_bone_pair_datalist",)
_CLASSIFICATION_BUILDERS = ("CHESTXRAY14_CLASSES", "CHEXPERT_CLASSES", "build_chestxray14_datalist",
                            "build_chexpert_datalist")
_PATCH_LOADER = ("PatchPoolDataLoader",)
_PHANTOM = ("CLASSIFICATION_FINDINGS", "FINDINGS", "PhantomLateral", "PhantomLesion", "PhantomRadiograph", "PhantomSummary",
            "generate_phantoms", "make_phantom")

# public name -> the submodule that defines it
_LAZY = {
    **dict.fromkeys(_DATALIST, "cxr_monai.data.datalist"),
    **dict.fromkeys(_LUNG_MASK_BUILDERS, "cxr_monai.data.builders.lung_masks"),
    **dict.fromkeys(_NIH_BUILDER, "cxr_monai.data.builders.nih"),
    **dict.fromkeys(_NIH_BOXES_BUILDER, "cxr_monai.data.builders.nih_boxes"),
    **dict.fromkeys(_SIIM_BUILDER, "cxr_monai.data.builders.siim"),
    **dict.fromkeys(_FOLDER_BUILDER, "cxr_monai.data.builders.folder"),
    **dict.fromkeys(_BONE_PAIR_BUILDER, "cxr_monai.data.builders.bone_pairs"),
    **dict.fromkeys(_CLASSIFICATION_BUILDERS, "cxr_monai.data.builders.classification"),
    **dict.fromkeys(_PATCH_LOADER, "cxr_monai.data.patch_loader"),
    **dict.fromkeys(_PHANTOM, "cxr_monai.data.phantom"),
}

__all__ = [
    "CLASSIFICATION_FINDINGS",
    "CHESTXRAY14_CLASSES",
    "CHEXPERT_CLASSES",
    "FINDINGS",
    "NIH_BOXES_CLASSES",
    "DatalistError",
    "DatalistSummary",
    "PatchPoolDataLoader",
    "PhantomLateral",
    "PhantomLesion",
    "PhantomRadiograph",
    "PhantomSummary",
    "build_bone_pair_datalist",
    "build_chestxray14_datalist",
    "build_chexpert_datalist",
    "build_folder_datalist",
    "build_jsrt_datalist",
    "build_montgomery_datalist",
    "build_nih_boxes_datalist",
    "build_nih_datalist",
    "build_shenzhen_datalist",
    "build_siim_datalist",
    "generate_phantoms",
    "image_file_problem",
    "datalist_label_names",
    "load_datalist",
    "lung_mask_problem",
    "make_phantom",
    "read_lung_mask",
    "split_groups",
    "validate_datalist",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups (and mock.patch) see a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
