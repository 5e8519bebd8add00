"""Synthetic frontal chest radiographs with ground truth, so every bundle and test runs without real data.

A phantom is a PA chest radiograph rendered from simple anatomy in normalised body coordinates: body
outline, two lungs, posterior and anterior ribs, clavicles, spine, trachea, heart on the image right (the
patient's left), diaphragm domes, a gastric bubble, and pulmonary vessel trees that branch and taper from the
hila. Healthy texture is smooth and predictable from context (ribs are continuous curves, vessels continuous
branches, exposure varies in smooth gradients); lesions are not: ``Nodule``, ``Mass``, ``Consolidation``
(patchy, with air bronchograms), ``Effusion`` (a meniscus at the costophrenic angle) and ``Pneumothorax``
(an apical-lateral rim without vessel markings, bounded by a thin pleural line). Each synthetic patient has
fixed anatomy; its follow-up images differ in pose, exposure, noise and lesions. For classification
(``classification=True``) two more findings, ``Cardiomegaly`` (the heart enlarged to a cardiothoracic ratio of
0.55-0.65, against 0.36-0.43 for normal phantoms) and ``Fracture`` (a gap across one or two ribs or a clavicle,
the lateral fragment displaced, drawn in the bone layer), and a lateral view of every image
(:class:`PhantomLateral`).

Python::

    summary = generate_phantoms("/tmp/phantom", num_images=20, size=512, seed=0)
    radiograph = make_phantom(size=256, seed=3, findings=("Nodule",))   # in memory, no files

Command line::

    python -m cxr_monai phantom --out /tmp/phantom --num-images 20 --size 512 --seed 0

Files written under the output directory:

- ``images/phantom_00000.png``: 16-bit greyscale PNG using the full 0..65535 range, lungs dark
  (MONOCHROME2 convention). ``dicom_fraction`` of the images are instead ``images/phantom_00007.dcm``: a
  CR Image Storage file (explicit VR little endian, BitsAllocated 16, BitsStored 12 or 14, PixelSpacing,
  RescaleSlope 1 / RescaleIntercept 0, a full-range linear window), ``monochrome1_fraction`` of them stored
  MONOCHROME1 (inverted), with synthetic patient fields (``PHANTOM^00003``...) for PHI-filter tests. Read
  through the project's reader, every format gives the same picture up to quantisation.
- ``masks/lungs/phantom_00000.png`` (uint8 0/255, both lungs, the heart excluded) for every image and
  ``masks/lesions/phantom_00000.png`` (union of the lesion masks) for abnormal images.
- ``Data_Entry_2017.csv`` and ``BBox_List_2017.csv`` in the NIH ChestX-ray14 layouts (header of the
  ``Data_Entry_2017_v2020.csv`` release; ``Image Index`` is the file name as written, ``.png`` or ``.dcm``).
- ``datalist.json`` (docs/data_contract.md): healthy images split into ``training`` / ``validation`` /
  ``test`` by patient (patients with an abnormal image are all in ``test``), abnormal images in
  ``test_unhealthy`` with ``boxes``, ``box_labels``, ``findings`` and ``lesion_mask``.
- With ``bone_pairs=True`` (``--bone-pairs``), for bone suppression, each image's pair in the image's own format
  (16-bit PNG, or DICOM with the radiograph's bit depth, photometric interpretation and window, in a series of
  its own): ``bone_suppressed/phantom_00000.png``, the same phantom (same anatomy, pose, exposure, lesions and
  noise) without ribs and clavicles, the spine kept; ``bones/phantom_00000.png``, the radiograph minus that
  image in [0, 1] display space (ribs and clavicles bright on black, like a dual-energy bone image); and
  ``rib_masks/phantom_00000.png`` (uint8 0/255), the lung pixels on a rib or clavicle. Datalist keys
  ``bone_suppressed``, ``bone`` and ``rib_mask``. Without it every file is the same as before, byte for byte.
  See :class:`PhantomRadiograph` for the exact definitions.
- With ``classification=True`` (``--classification``), for a multi-label (frontal + lateral) classifier: the
  abnormal images draw each finding of :data:`CLASSIFICATION_FINDINGS` independently
  (:data:`CLASSIFICATION_PROBABILITIES`), Cardiomegaly and Fracture included (boxes: the heart; the break);
  ``laterals/phantom_00000.png`` (or ``.dcm``, like the image), the lateral view; datalist top-level
  ``label_names`` and per entry ``labels`` (multi-hot), ``lateral`` and ``study``; all images split by patient,
  abnormal ones too. Without it every file is the same as before, byte for byte.
- With ``pneumothorax=True`` (``--pneumothorax``), for a pneumothorax classifier with mask supervision (seed 004,
  SIIM-ACR): half the images by default (``abnormal_fraction`` 0.5, a balanced set) have exactly one
  ``Pneumothorax`` and nothing else; every image has ``masks/lesions/phantom_00000.png``, the pneumothorax region
  (blank for the others); all images split by patient, the abnormal test images in ``test_unhealthy``; and
  ``train-rle.csv`` lists every image in SIIM's ``ImageId, EncodedPixels`` layout (:mod:`cxr_monai.io.rle`; the
  image's stem as ``ImageId``, ``-1`` for a normal image). Without it every file is the same as before.

The same seed gives byte-identical files (DICOM UIDs are derived from the seed; there are no timestamps).
Cost: about 0.16 s of one CPU core per 1024 px image, files included (smooth anatomy is drawn at half
resolution; vessels, lesions and noise at full resolution).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (PYDICOM_IMPLEMENTATION_UID, ComputedRadiographyImageStorage, ExplicitVRLittleEndian,
                         generate_uid)
from scipy import ndimage

from cxr_monai.data.datalist import split_groups
from cxr_monai.io.rle import rle_encode

__all__ = [
    "CLASSIFICATION_FINDINGS",
    "CLASSIFICATION_PROBABILITIES",
    "FINDINGS",
    "NIH_BBOX_HEADER",
    "NIH_DATA_ENTRY_HEADER",
    "RIB_MASK_THRESHOLD",
    "SIIM_RLE_HEADER",
    "PhantomLateral",
    "PhantomLesion",
    "PhantomRadiograph",
    "PhantomSummary",
    "add_arguments",
    "generate_phantoms",
    "make_phantom",
    "run",
]

FINDINGS = ("Nodule", "Mass", "Consolidation", "Effusion", "Pneumothorax")
"""Lesion types, named as the NIH ChestX-ray14 labels."""

CLASSIFICATION_FINDINGS = (*FINDINGS, "Cardiomegaly", "Fracture")
"""Every finding the generator can draw, in the order of a classification set's ``label_names``: the lesion types
of :data:`FINDINGS`, then ``Cardiomegaly`` (an enlarged heart, cardiothoracic ratio 0.55-0.65) and ``Fracture``
(a broken rib or clavicle: a gap with a displaced fragment), which only ``classification=True`` draws."""

CLASSIFICATION_PROBABILITIES = {"Nodule": 0.25, "Mass": 0.12, "Consolidation": 0.2, "Effusion": 0.2,
                                "Pneumothorax": 0.15, "Cardiomegaly": 0.3, "Fracture": 0.2}
"""With ``classification=True``, each abnormal image draws every finding independently with this probability,
drawing again while it has none (so within the abnormal images each finding is present 1.25 times as often,
1.78 findings an image on average)."""

NIH_DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
"""First line of NIH's ``Data_Entry_2017_v2020.csv`` (unquoted commas inside the last two names included)."""

NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
"""First line of NIH's ``BBox_List_2017.csv``; its data rows have six fields."""

NO_FINDING = "No Finding"
PNEUMOTHORAX = "Pneumothorax"
SIIM_RLE_HEADER = "ImageId, EncodedPixels"
"""First line of SIIM-ACR's ``train-rle.csv`` (with its leading space), as ``pneumothorax=True`` writes it."""
_PNEUMOTHORAX_ABNORMAL_FRACTION = 0.5  # seed 004: as many images with pneumothorax as without
_ABNORMAL_FRACTION = 0.3
FIELD_OF_VIEW_MM = 430.0  # detector width, so that pixel spacing is FIELD_OF_VIEW_MM / size
MIN_SIZE = 64

_FINDING_WEIGHTS = {"Nodule": 0.3, "Mass": 0.15, "Consolidation": 0.2, "Effusion": 0.15, "Pneumothorax": 0.2}
_SPLIT_KEYS = ("training", "validation", "test", "test_unhealthy")
_SPLIT_FRACTIONS = {"validation": 0.15, "test": 0.15}  # of the healthy images, by patient
_PATIENT_IMAGES = (1, 4)  # images (follow-ups) per synthetic patient, inclusive
_STUDY_EPOCH = datetime.date(2020, 1, 6)

# ------------------------------------------------------------------------------------------------------------
# small numerical helpers (all float32)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1`` (either order), cubic in between."""
    t = np.clip((x - edge0) * (1.0 / (edge1 - edge0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bone_profile(z: np.ndarray, cortex: float = 0.3) -> np.ndarray:
    """Projection of a tube of unit half-width with a cortical shell: 1 at the centre, brighter rims, 0 outside."""
    z2 = np.minimum(z * z, 1.0)
    outer = np.sqrt(1.0 - z2)
    inner = np.sqrt(np.maximum(0.64 - z2, 0.0))  # marrow radius 0.8
    return (1.0 - cortex) * outer + cortex * (outer - inner) * 5.0


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x_min, y_min, x_max, y_max)`` of a 2-D mask, max exclusive; ``None`` when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _box_slices(box: tuple[int, int, int, int], margin: int, size: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    return slice(max(y0 - margin, 0), min(y1 + margin, size)), slice(max(x0 - margin, 0), min(x1 + margin, size))


# ------------------------------------------------------------------------------------------------------------
# anatomy in canonical coordinates: u to the image right, v down, the chest spans about [-1, 1] in both.
# Each lung is described in (t, v) with t = side * u >= 0 growing laterally; side -1 is the image-left lung
# (the patient's right), side +1 the image-right lung (the patient's left, next to the heart).

_SIDES = (-1, 1)


@dataclass(frozen=True)
class _LungShape:
    """One lung as the intersection of four smooth borders; :meth:`sdf` is > 0 inside (canonical units)."""

    t_medial: float
    t_lateral: float  # widest lateral extent, reached at v_widest and below
    k_lateral: float  # the lateral ellipse closes this far above the apex
    v_widest: float
    v_apex: float
    t_apex: float
    k_apex: float
    v_dome: float  # top of the diaphragm dome
    t_dome: float
    k_dome: float

    def sdf(self, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        lateral = self.lateral_t(v) - t
        top = v - (self.v_apex + self.k_apex * np.square(t - self.t_apex))
        bottom = self.dome_v(t) - v
        return np.minimum(np.minimum(t - self.t_medial, lateral), np.minimum(top, bottom))

    def lateral_t(self, v: np.ndarray) -> np.ndarray:
        """Elliptical lateral border: ``t_lateral`` at and below ``v_widest``, closing ``k_lateral`` above the apex."""
        rise = np.maximum(self.v_widest - v, 0.0) * (1.0 / (self.v_widest - self.v_apex + self.k_lateral))
        return self.t_lateral * np.sqrt(np.maximum(1.0 - rise * rise, 0.0))

    def dome_v(self, t: np.ndarray) -> np.ndarray:
        """Diaphragm: steeper down to the costophrenic angle than to the cardiophrenic angle."""
        offset = t - self.t_dome
        return self.v_dome + np.where(offset > 0, self.k_dome, 0.45 * self.k_dome) * np.square(offset)


@dataclass(frozen=True)
class _RibFamily:
    """Parallel curved ribs ``v = offset + c1 t + c2 t^2 + c3 max(t - t_bend, 0)^2``, spacing growing downwards.

    The rib phase ``count * ((w - top) / length) ** power`` (``w``: v minus the curve), plus a slow irregular
    wobble, is ``k + 0.5`` on the axis of rib ``k``; every pixel is drawn from its two nearest ribs, so the ribs
    are continuous curves without a loop over them.
    """

    c1: float
    c2: float
    c3: float
    t_bend: float
    top: float
    length: float
    count: int
    power: float
    half_thickness: float  # perpendicular, canonical units
    wobble: tuple[float, float, float, float]  # phase amplitude, frequency, offset; thickness offset
    t_fade: tuple[float, float]  # medial fade-in between these t

    def phase(self, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rib phase at ``(t, v)`` (``k + 0.5`` on the axis of rib ``k``), the ribs' slope dv/dt, and ``x``."""
        bend = np.maximum(t - self.t_bend, 0.0)
        w = v - (self.c1 * t + self.c2 * t * t + self.c3 * bend * bend)
        slope = self.c1 + 2.0 * self.c2 * t + 2.0 * self.c3 * bend
        x = np.maximum((w - self.top) * (1.0 / self.length), 1e-4)
        phase = self.count * x**self.power
        amplitude, frequency, offset, _ = self.wobble
        phase += amplitude * np.sin(frequency * phase + offset)
        return phase, slope, x

    def _nearest(self, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index of the nearest rib axis above each pixel, the phase past it (0..1) and the ribs' half-thickness."""
        phase, slope, x = self.phase(t, v)
        # phase units per canonical unit across the rib, so that ribs keep their thickness where they bend down
        phase_per_unit = phase * (self.power / self.length) / x * np.sqrt(1.0 + slope * slope)
        half = self.half_thickness * (1.0 + 0.08 * np.sin(2.3 * phase + self.wobble[3])) * phase_per_unit
        below = np.floor(phase - 0.5)  # index of the nearest rib axis above this pixel
        return below, phase - 0.5 - below, half

    def render(self, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        below, f, half = self._nearest(t, v)
        out = np.where((below >= 0) & (below < self.count), _bone_profile(f / half), 0.0)
        out += np.where((below >= -1) & (below < self.count - 1), _bone_profile((1.0 - f) / half), 0.0)
        return out * _smoothstep(self.t_fade[0], self.t_fade[1], t)

    def render_rib(self, t: np.ndarray, v: np.ndarray, rib: int) -> np.ndarray:
        """Rib ``rib`` alone: its share of :meth:`render`."""
        below, f, half = self._nearest(t, v)
        out = np.where(below == rib, _bone_profile(f / half), 0.0)
        out += np.where(below == rib - 1, _bone_profile((1.0 - f) / half), 0.0)
        return out * _smoothstep(self.t_fade[0], self.t_fade[1], t)

    def axis_v(self, t: float, rib: int) -> float:
        """Height ``v`` of rib ``rib``'s axis at ``t`` (canonical)."""
        v = np.linspace(self.top, self.top + 1.5 * self.length, 3001)
        phase = self.phase(np.full_like(v, t), v)[0]
        return float(np.interp(rib + 0.5, np.maximum.accumulate(phase), v))


@dataclass(frozen=True)
class _VesselTree:
    """Curved vessel segments in (t, v): start, heading, curvature, visible length, radius (canonical units)."""

    start_t: np.ndarray
    start_v: np.ndarray
    heading: np.ndarray
    curvature: np.ndarray
    length: np.ndarray
    radius: np.ndarray

    def sample(self, step: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Points every ``step`` (scalar or per segment) along all segments: ``(t, v, radius, step)``."""
        step = np.broadcast_to(np.asarray(step, float), self.length.shape)
        counts = np.maximum(np.ceil(self.length / step).astype(np.int64), 1) + 1
        seg = np.repeat(np.arange(counts.size), counts)
        first = np.cumsum(counts) - counts
        s = np.minimum((np.arange(seg.size) - first[seg]) * step[seg], self.length[seg])
        t, v = _arc_points(self.start_t[seg], self.start_v[seg], self.heading[seg], self.curvature[seg], s)
        taper = 1.0 - 0.15 * s / np.maximum(self.length[seg], 1e-6)
        return t, v, self.radius[seg] * taper, step[seg]


def _arc_points(t0: np.ndarray, v0: np.ndarray, heading: np.ndarray, curvature: np.ndarray,
                s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at arc length ``s`` along circular arcs (straight where the curvature is ~0)."""
    straight = np.abs(curvature) < 1e-6
    k = np.where(straight, 1.0, curvature)
    end = heading + curvature * s
    dt = np.where(straight, np.cos(heading) * s, (np.sin(end) - np.sin(heading)) / k)
    dv = np.where(straight, np.sin(heading) * s, (np.cos(heading) - np.cos(end)) / k)
    return t0 + dt, v0 + dv


def _grow_vessel_tree(rng: np.random.Generator, root: tuple[float, float], root_headings: Sequence[float], *,
                      root_radius: float, root_length: float, min_radius: float, levels: int,
                      inside_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> _VesselTree:
    """Branch from ``root`` level by level (Murray-like calibres); a branch stops where ``inside_fn`` turns False.

    Units are the caller's (canonical for lung vessels, pixels for air bronchograms); curvature scales with them.
    """
    n = len(root_headings)
    heading = np.asarray(root_headings, float) + rng.normal(0.0, 0.08, n)
    # the roots leave a small hilar disc rather than a single point
    pos_t = root[0] + 2.0 * root_radius * np.cos(heading)
    pos_v = root[1] + 2.0 * root_radius * np.sin(heading)
    length = root_length * rng.uniform(0.85, 1.15, n)
    radius = np.full(n, root_radius) * rng.uniform(0.85, 1.15, n)
    parts: list[tuple[np.ndarray, ...]] = []
    probe = np.linspace(0.0, 1.0, 24)
    for level in range(levels):
        curvature = rng.normal(0.0, 0.2 / root_length, heading.size)
        s = length[:, None] * probe[None, :]
        t, v = _arc_points(pos_t[:, None], pos_v[:, None], heading[:, None], curvature[:, None], s)
        # the hilar trunks are always drawn; their branches stop at the lung border
        inside = np.ones_like(t, bool) if level == 0 or inside_fn is None else inside_fn(t, v)
        inside = np.cumprod(inside, axis=1).astype(bool)
        visible = np.where(inside.any(axis=1), s[np.arange(t.shape[0]), inside.sum(axis=1) - 1], 0.0)
        keep = visible > 0
        parts.append((pos_t[keep], pos_v[keep], heading[keep], curvature[keep], visible[keep], radius[keep]))
        grow = inside[:, -1] & (radius * 0.8 > min_radius)
        if not grow.any():
            break
        end_t, end_v = t[grow, -1], v[grow, -1]
        end_heading = (heading + curvature * length)[grow]
        m = end_t.size
        spread = rng.uniform(0.35, 0.75, m)
        share = rng.uniform(0.3, 0.7, m)
        pos_t, pos_v = np.concatenate([end_t, end_t]), np.concatenate([end_v, end_v])
        heading = np.concatenate([end_heading + spread * share, end_heading - spread * (1 - share)])
        parent_length = np.concatenate([length[grow], length[grow]])
        length = parent_length * rng.uniform(0.72, 0.92, 2 * m)
        parent_radius = np.concatenate([radius[grow], radius[grow]])
        # the branch closer to the parent's heading keeps more of the calibre
        radius = parent_radius * np.concatenate([0.88 - 0.2 * share, 0.68 + 0.2 * share])
    return _VesselTree(*(np.concatenate([p[i] for p in parts]).astype(np.float32) for i in range(6)))


@dataclass(frozen=True)
class _PatientAnatomy:
    """Everything that stays fixed across one synthetic patient's follow-up images."""

    lungs: tuple[_LungShape, _LungShape]  # indexed like _SIDES
    heart_center: tuple[float, float]
    heart_axes: tuple[float, float]
    heart_angle: float
    knob_center: tuple[float, float]  # aortic knob, image right
    knob_radius: float
    body_half_width: float
    neck_half_width: float
    shoulder_v: float
    posterior_ribs: tuple[_RibFamily, _RibFamily]
    anterior_ribs: tuple[_RibFamily, _RibFamily]
    clavicle: tuple[tuple[float, float, float, float], tuple[float, float, float, float]]  # v0, slope, s-bend, len
    spine_shift: float
    hila: tuple[tuple[float, float], tuple[float, float]]  # (t, v) per side
    vessels: tuple[_VesselTree, _VesselTree]
    age: int
    sex: str
    fractures: tuple[_Fracture, ...] = ()  # per image, drawn only for a Fracture finding


@dataclass(frozen=True)
class _Fracture:
    """A broken posterior rib or clavicle: a gap across the bone, the lateral fragment displaced.

    ``at`` is the break's ``t``, on rib ``rib`` of the posterior family of side ``side`` or, with ``rib`` -1, on
    that side's clavicle; ``gap`` (along ``t``) and ``step`` (down, > 0, or up) in canonical units.
    """

    side: int
    rib: int
    at: float
    gap: float
    step: float

    @property
    def clavicle(self) -> bool:
        return self.rib < 0

    def fragments(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights of the medial and the lateral fragment at ``t`` (a canonical t; 0 in the gap)."""
        edge = 0.004
        return (_smoothstep(self.at - 0.5 * self.gap, self.at - 0.5 * self.gap - edge, t),
                _smoothstep(self.at + 0.5 * self.gap, self.at + 0.5 * self.gap + edge, t))


def _rib_family(rng: np.random.Generator, *, anterior: bool, scale_v: float) -> _RibFamily:
    count = 7 if anterior else 12
    if anterior:
        shape = dict(c1=-0.62 + rng.normal(0, 0.03), c2=0.3, c3=0.0, t_bend=1.0,
                     top=-0.92 + rng.normal(0, 0.015), length=1.05 * scale_v, power=0.9,
                     half_thickness=0.027 * rng.uniform(0.9, 1.1), t_fade=(0.16, 0.32))
    else:
        shape = dict(c1=-0.36 + rng.normal(0, 0.02), c2=0.55 + rng.normal(0, 0.03), c3=0.7 + rng.normal(0, 0.1),
                     t_bend=0.5 + rng.normal(0, 0.02), top=-0.80 + rng.normal(0, 0.015), length=1.6 * scale_v,
                     power=0.85, half_thickness=0.029 * rng.uniform(0.9, 1.1), t_fade=(0.03, 0.08))
    wobble = (rng.uniform(0.02, 0.05), rng.uniform(1.3, 2.1), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi))
    return _RibFamily(count=count, wobble=wobble, **shape)


def _sample_patient(rng: np.random.Generator) -> _PatientAnatomy:
    width = rng.uniform(0.94, 1.04)
    height = rng.uniform(0.94, 1.04)
    lungs = []
    for side in _SIDES:
        right_lung = side < 0  # the patient's right lung: wider and with a higher dome
        lungs.append(_LungShape(
            t_medial=0.10 + rng.uniform(-0.01, 0.01),
            t_lateral=(0.80 if right_lung else 0.78) * width + rng.normal(0, 0.01),
            k_lateral=0.06 + rng.normal(0, 0.01),
            v_widest=0.36 * height,
            v_apex=-0.72 * height + rng.normal(0, 0.015),
            t_apex=0.30 * width,
            k_apex=3.5 + rng.normal(0, 0.2),
            v_dome=(0.27 if right_lung else 0.33) * height + rng.normal(0, 0.02),
            t_dome=0.40 * width,
            k_dome=1.2 + rng.normal(0, 0.08),
        ))
    heart_width = rng.uniform(0.3, 0.36) * width
    posterior = tuple(_rib_family(rng, anterior=False, scale_v=height) for _ in _SIDES)
    anterior = tuple(_rib_family(rng, anterior=True, scale_v=height) for _ in _SIDES)
    clavicle_v, clavicle_slope = -0.58 * height + rng.normal(0, 0.015), -0.2 + rng.normal(0, 0.02)
    clavicle = tuple((clavicle_v + rng.normal(0, 0.005), clavicle_slope + rng.normal(0, 0.01),
                      0.012 + rng.normal(0, 0.002), 0.62 * width) for _ in _SIDES)
    vessels, hila = [], []
    for side, lung in zip(_SIDES, lungs):
        hilum = (0.2 * width, (-0.04 if side < 0 else -0.08) * height)
        hila.append(hilum)
        # headings in (t, v): 0 = lateral, -pi/2 = up, +pi/2 = down; upper, middle and lower lobe trunks
        headings = (-1.3, -0.75, -0.1, 0.55, 1.2)
        vessels.append(_grow_vessel_tree(rng, hilum, headings, root_radius=0.016, root_length=0.1,
                                         min_radius=0.0015, levels=9,
                                         inside_fn=lambda t, v, lung=lung: lung.sdf(t, v) > 0.004))
    return _PatientAnatomy(
        lungs=tuple(lungs),
        heart_center=(0.1 * width + rng.normal(0, 0.01), 0.22 * height),
        heart_axes=(heart_width, 0.21 * height),
        heart_angle=0.45 + rng.normal(0, 0.05),
        knob_center=(0.06 * width, -0.30 * height),
        knob_radius=0.075,
        body_half_width=0.97 * width,
        neck_half_width=0.2 * width,
        shoulder_v=-0.95 * height,
        posterior_ribs=posterior,
        anterior_ribs=anterior,
        clavicle=clavicle,
        spine_shift=rng.normal(0, 0.008),
        hila=tuple(hila),
        vessels=tuple(vessels),
        age=int(rng.integers(18, 90)),
        sex=str(rng.choice(["F", "M"])),
    )


# ------------------------------------------------------------------------------------------------------------
# pose: canonical coordinates -> pixels


@dataclass(frozen=True)
class _Pose:
    """``p = scale * R(angle) c + shift`` with ``p`` the pixel position normalised to [-1, 1]."""

    size: int
    angle: float
    scale: float
    shift: tuple[float, float]

    @property
    def pixels_per_unit(self) -> float:
        return self.scale * self.size / 2.0

    def to_pixels(self, cu: np.ndarray, cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical -> (x, y) pixel coordinates (pixel centres at integers)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = self.scale * (c * cu - s * cv) + self.shift[0]
        v = self.scale * (s * cu + c * cv) + self.shift[1]
        return (u + 1.0) * self.size / 2.0 - 0.5, (v + 1.0) * self.size / 2.0 - 0.5

    def grid(self, window: tuple[slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Canonical coordinates of every pixel, two float32 ``(size, size)`` arrays (of ``window`` only if given)."""
        axis = ((np.arange(self.size, dtype=np.float32) + 0.5) * (2.0 / self.size) - 1.0)
        c, s = math.cos(self.angle) / self.scale, math.sin(self.angle) / self.scale
        rows, cols = window if window is not None else (slice(None), slice(None))
        du, dv = axis[cols] - np.float32(self.shift[0]), axis[rows] - np.float32(self.shift[1])
        cu = (c * du)[None, :] + (s * dv)[:, None]
        cv = (-s * du)[None, :] + (c * dv)[:, None]
        return cu.astype(np.float32), cv.astype(np.float32)

    def right_half(self) -> np.ndarray:
        """Boolean ``(size, size)``: pixels on the image-right side of the body's midline (canonical u > 0)."""
        axis = (np.arange(self.size, dtype=np.float32) + 0.5) * (2.0 / self.size) - 1.0
        # u = 0 maps to the line  x_norm = shift_x - tan(angle) * (y_norm - shift_y)
        midline = self.shift[0] - math.tan(self.angle) * (axis - self.shift[1])
        return axis[None, :] > midline[:, None]

    def crop(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
        """Pixel slices covering a canonical box."""
        x, y = self.to_pixels(np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1]))
        x0, x1 = max(int(np.floor(x.min())) - 1, 0), min(int(np.ceil(x.max())) + 2, self.size)
        y0, y1 = max(int(np.floor(y.min())) - 1, 0), min(int(np.ceil(y.max())) + 2, self.size)
        return slice(y0, max(y1, y0)), slice(x0, max(x1, x0))


# ------------------------------------------------------------------------------------------------------------
# rendering

# densities, in display units before the per-image exposure curve
_AIR_OUTSIDE = 0.03
_SOFT_TISSUE = 0.68
_LUNG_AIR = 0.44
_HEART = 0.07
_SPINE = 0.07
_POSTERIOR_RIB = 0.085
_ANTERIOR_RIB = 0.055
_CLAVICLE = 0.11
_TRACHEA = 0.07
_HILUM = 0.06
_VESSEL = 0.24  # peak density of a vessel of radius 0.02 (canonical); thinner ones: ~ radius ** 1.25
_GASTRIC_BUBBLE = 0.22

RIB_MASK_THRESHOLD = 0.1
"""A lung pixel is in :attr:`PhantomRadiograph.rib_mask` when its rib-and-clavicle bone profile is at least this."""


@dataclass
class PhantomLesion:
    """One synthetic finding: NIH finding name, full-image boolean mask, box ``(x0, y0, x1, y1)`` (max exclusive).

    The masks of :data:`FINDINGS` lie in the lungs. ``Cardiomegaly``'s is the cardiac silhouette
    (:attr:`PhantomRadiograph.heart_mask`), outside the lungs; ``Fracture``'s (one lesion per broken bone) the bone
    around the break, before and after it broke, within half a gap plus 1.5 px of the gap's edges.
    """

    finding: str
    mask: np.ndarray
    box: tuple[int, int, int, int]


@dataclass
class PhantomRadiograph:
    """A rendered phantom: ``image`` float32 ``(H, W)`` in [0, 1] with lungs dark, ``lung_mask`` bool, lesions.

    ``lung_boxes`` holds one box per lung, left to right, like :attr:`PhantomLesion.box`.

    Rendered with ``bone_pairs=True`` (:func:`make_phantom`), the bone-suppression pair of the same phantom (the
    same anatomy, pose, exposure, lesions and noise); ``None`` otherwise:

    - ``soft_tissue``: float32 ``(H, W)`` in [0, 1], the radiograph rendered without the ribs and clavicles (the
      "bone-suppressed" image). Only ribs and clavicles are left out: the spine (and every other structure) stays
      in it, unlike a dual-energy soft-tissue image, which keeps no bone at all.
    - ``bone``: float32 ``(H, W)``, ``image - soft_tissue`` in display space, before quantisation, so that
      ``soft_tissue + bone == image`` up to float rounding. Physically it is the ribs' and clavicles' contribution
      to the displayed radiograph, like the bone image of a dual-energy pair (bones bright on black). It is
      >= 0, and exactly 0 wherever no rib or clavicle lies. Both images carry the radiograph's noise realisation
      (whose level follows the radiograph's density), so the noise cancels in ``bone`` except where the exposure
      curve (clipping, gamma) bends it.
    - ``rib_mask``: bool ``(H, W)``, the lung pixels (``lung_mask``) whose rib-and-clavicle bone profile is at
      least :data:`RIB_MASK_THRESHOLD`, 0.1 (profile: each bone's projected density over its peak density, about
      1 on a rib's axis against full lung air, up to about 1.3 on its cortical rims, fading with the rib cage's
      medial, lateral and diaphragmatic fades, 0 between the ribs; summed where bones cross; for images of
      512 px and more drawn at half resolution and upsampled bilinearly, like the bone density). The between-rib
      lung pixels are :attr:`between_rib_mask`, ``lung_mask & ~rib_mask``; the mean of ``bone`` there is under
      0.5 % of its mean on ``rib_mask`` (under 0.1 % below 512 px, where nothing is upsampled).

    Residual rib contrast of a bone-suppression network: mean intensity on ``rib_mask`` minus mean intensity on
    ``between_rib_mask``. It is not 0 for the ideal output, ``soft_tissue``: ribs crowd the brighter apices and
    lung borders and are sparse over the darker bases, so whole-lung means differ by up to about 0.02, a fifth of
    the radiograph's 0.07-0.10. Compare a prediction with the same measure on ``soft_tissue`` (or subtract a
    local background) rather than with 0.

    ``heart_mask``: bool ``(H, W)``, the cardiac silhouette (the heart above the diaphragm), set by
    :func:`make_phantom` and :func:`generate_phantoms`; :attr:`cardiothoracic_ratio` measures it against the lungs.
    ``lateral``: the lateral view of the same patient and findings (:class:`PhantomLateral`), rendered with
    ``lateral=True``; ``None`` otherwise.
    """

    image: np.ndarray
    lung_mask: np.ndarray
    lung_boxes: list[tuple[int, int, int, int]]
    lesions: list[PhantomLesion] = field(default_factory=list)
    soft_tissue: np.ndarray | None = None
    bone: np.ndarray | None = None
    rib_mask: np.ndarray | None = None
    heart_mask: np.ndarray | None = None
    lateral: PhantomLateral | None = None

    @property
    def cardiothoracic_ratio(self) -> float | None:
        """Width of ``heart_mask`` over the width of ``lung_mask`` (both lungs, outer borders), in pixels.

        About 0.36-0.43 for a normal phantom, 0.55-0.65 with ``Cardiomegaly`` (``None`` without a heart mask).
        """
        if self.heart_mask is None:
            return None
        heart, lungs = _bbox(self.heart_mask), _bbox(self.lung_mask)
        if heart is None or lungs is None:
            return None
        return (heart[2] - heart[0]) / (lungs[2] - lungs[0])

    @property
    def between_rib_mask(self) -> np.ndarray | None:
        """Lung pixels off the ribs and clavicles, ``lung_mask & ~rib_mask`` (``None`` without the bone pair)."""
        return None if self.rib_mask is None else self.lung_mask & ~self.rib_mask

    @property
    def findings(self) -> list[str]:
        """Sorted distinct finding names (empty for a healthy image)."""
        return sorted({lesion.finding for lesion in self.lesions})

    @property
    def lesion_mask(self) -> np.ndarray:
        """Union of the lesion masks."""
        mask = np.zeros_like(self.lung_mask)
        for lesion in self.lesions:
            mask |= lesion.mask
        return mask


@dataclass
class PhantomLateral:
    """The lateral view (left lateral, the patient facing the image left) of a phantom: the same patient, findings
    and image size, its own pose, exposure and noise.

    ``image`` float32 ``(H, W)`` in [0, 1], lungs dark; ``lung_mask`` (bool) the lung field seen from the side (both
    lungs, the heart excluded); ``heart_mask`` (bool) the heart shadow. Anterior is on the left, the spine on the
    right, the sternum at the front, the heart anterior-inferior over the two diaphragm domes (the patient's
    right one higher), ribs as oblique curves running down towards the front (the two sides slightly apart).
    Findings: nodules, masses and consolidations at the frontal's height (at a random depth); an effusion
    fills that side's posterior costophrenic sulcus, its meniscus climbing the back; a pneumothorax is a subtle
    apical pleural line; cardiomegaly is a deeper, taller heart shadow reaching back towards the spine. Fractures
    are not shown (in a lateral view the ribs of both sides overlap).
    """

    image: np.ndarray
    lung_mask: np.ndarray
    heart_mask: np.ndarray


class _Layers:
    """Canonical coordinates of every pixel at one resolution, and the anatomy drawn on them.

    With ``bone_layer``, the ribs and clavicles are also kept apart: ``bone`` holds their density (the part of
    ``density`` they added) and ``bone_profile`` their dimensionless projected thickness (see
    :func:`_render_ribs_and_clavicles`); both stay ``None`` otherwise.
    """

    def __init__(self, anatomy: _PatientAnatomy, pose: _Pose, bone_layer: bool = False):
        self.anatomy, self.pose = anatomy, pose
        self.cu, self.cv = pose.grid()
        shape = self.cu.shape
        self.density = np.zeros(shape, np.float32)  # tissue and bone, before lung air and vessels
        self.air = np.zeros(shape, np.float32)  # 0..1: how much lung air a pixel sees
        self.lung_sdf = np.full(shape, -1.0, np.float32)  # > 0 in the visible lungs (heart, aortic knob cut out)
        self.vessels = np.zeros(shape, np.float32)
        self.bone = np.zeros(shape, np.float32) if bone_layer else None  # ribs + clavicles, within density
        self.bone_profile = np.zeros(shape, np.float32) if bone_layer else None


def _render_body(layers: _Layers) -> None:
    a = layers.anatomy
    t, cv = np.abs(layers.cu), layers.cv
    torso = np.sqrt(np.maximum(1.0 - np.square(t / a.body_half_width), 0.0))
    shoulder_line = a.shoulder_v + 0.45 * np.square(np.maximum(t - a.neck_half_width, 0.0))
    torso *= _smoothstep(0.0, 0.08, cv - shoulder_line)
    neck = np.sqrt(np.maximum(1.0 - np.square(t / a.neck_half_width), 0.0)) * 0.85
    layers.density += _AIR_OUTSIDE + (_SOFT_TISSUE - _AIR_OUTSIDE) * np.maximum(torso, neck)


def _heart_outside(a: _PatientAnatomy, cu: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the heart ellipse, > 0 outside."""
    c, s = math.cos(a.heart_angle), math.sin(a.heart_angle)
    du, dv = cu - a.heart_center[0], cv - a.heart_center[1]
    x, y = (c * du + s * dv) / a.heart_axes[0], (-s * du + c * dv) / a.heart_axes[1]
    return (np.sqrt(x * x + y * y) - 1.0) * min(a.heart_axes)


def _render_lungs_and_heart(layers: _Layers) -> None:
    a, pose = layers.anatomy, layers.pose
    for side, lung in zip(_SIDES, a.lungs):
        lo, hi = (-1.0, 0.02) if side < 0 else (-0.02, 1.0)
        sl = pose.crop(lo, hi, lung.v_apex - 0.08, 0.85)
        cu, cv = layers.cu[sl], layers.cv[sl]
        sdf = np.minimum(lung.sdf(side * cu, cv), _heart_outside(a, cu, cv))
        if side > 0:
            knob = np.sqrt(np.square(cu - a.knob_center[0]) + np.square(cv - a.knob_center[1])) - a.knob_radius
            sdf = np.minimum(sdf, knob)
        # air thickens away from the border (the mask edge, sdf = 0, sees a third of it); thinner at the apex
        air = _smoothstep(-0.025, 0.045, sdf) * (0.82 + 0.18 * _smoothstep(-0.7, -0.2, cv))
        np.maximum(layers.lung_sdf[sl], sdf, out=layers.lung_sdf[sl])
        np.maximum(layers.air[sl], air, out=layers.air[sl])
    sl = pose.crop(a.heart_center[0] - 0.5, a.heart_center[0] + 0.5, a.heart_center[1] - 0.45,
                   a.heart_center[1] + 0.45)
    cu, cv = layers.cu[sl], layers.cv[sl]
    heart = _smoothstep(0.02, -0.06, _heart_outside(a, cu, cv))
    layers.density[sl] += _HEART * heart
    for side, lung in zip(_SIDES, a.lungs):  # lung behind the heart: a little darker than the mediastinum
        layers.density[sl] -= 0.05 * heart * _smoothstep(0.0, 0.08, lung.sdf(side * cu, cv))


def _render_ribs_and_clavicles(layers: _Layers) -> None:
    """Add the ribs and clavicles to ``layers.density`` (and, when kept, to ``bone`` and ``bone_profile``).

    The bone profile is each bone's density divided by its peak density constant (``_POSTERIOR_RIB``,
    ``_ANTERIOR_RIB``, ``_CLAVICLE``), summed where bones cross: about 1 on a rib's axis seen against full lung
    air, up to about 1.3 on its cortical rims, fading with the rib cage's medial, lateral and diaphragmatic
    fades, 0 between the ribs. ``density`` gets exactly the values it got before the bone layer existed.
    """
    a, pose = layers.anatomy, layers.pose
    keep = layers.bone is not None
    for side, lung, posterior, anterior, clavicle in zip(_SIDES, a.lungs, a.posterior_ribs, a.anterior_ribs,
                                                         a.clavicle):
        # each family is drawn in its own canonical box only; the cage ends 0.12 beyond the lung
        cage_t = lung.t_lateral + 0.12
        for ribs, density, (t_lo, v_lo, v_hi) in ((posterior, _POSTERIOR_RIB, (0.0, posterior.top - 0.1, 1.0)),
                                                  (anterior, _ANTERIOR_RIB, (anterior.t_fade[0], -1.0, 0.3))):
            sl = pose.crop(min(side * t_lo, side * cage_t), max(side * t_lo, side * cage_t), v_lo, v_hi)
            t, v = side * layers.cu[sl], layers.cv[sl]
            cage = _smoothstep(0.0, 0.05, lung.lateral_t(v) + 0.07 - t)
            cage *= 1.0 - 0.8 * _smoothstep(0.0, 0.15, v - lung.dome_v(t))
            cage *= 0.4 + 0.6 * layers.air[sl]  # ribs show best against lung air
            rendered = ribs.render(t, v)
            if ribs is posterior:
                for fracture in a.fractures:
                    if fracture.side == side and not fracture.clavicle:
                        rendered = rendered + _broken_rib(ribs, fracture, t, v)
            added = density * cage * rendered
            layers.density[sl] += added
            if keep:
                layers.bone[sl] += added
                layers.bone_profile[sl] += cage * rendered
        # clavicle: a gently S-shaped tube from the sternal end (t0) out to the shoulder
        v0, slope, _, length = clavicle
        t0 = _CLAVICLE_T0
        sl = pose.crop(min(side * t0, side * (t0 + length)) - 0.03, max(side * t0, side * (t0 + length)) + 0.03,
                       v0 + slope * length - 0.1, v0 + 0.1)
        t, v = side * layers.cu[sl], layers.cv[sl]
        z, ends = _clavicle_z(clavicle, t, v)
        profile = _bone_profile(z, cortex=0.4)
        for fracture in a.fractures:
            if fracture.side == side and fracture.clavicle:
                profile = _broken_clavicle(clavicle, fracture, t, v, profile)
        added = _CLAVICLE * profile * ends
        layers.density[sl] += added
        if keep:
            layers.bone[sl] += added
            layers.bone_profile[sl] += profile * ends


_CLAVICLE_T0 = 0.06  # t of the clavicle's sternal end


def _clavicle_z(clavicle: tuple[float, float, float, float], t: np.ndarray,
                v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance across the clavicle in half-widths, and its fade at the two ends."""
    v0, slope, bend, length = clavicle
    s = (t - _CLAVICLE_T0) / length
    phase = 2.0 * math.pi * s
    centre = v0 + slope * (t - _CLAVICLE_T0) + bend * np.sin(phase)
    tilt = slope + bend * 2.0 * math.pi / length * np.cos(phase)
    half = 0.026 * (1.0 + 0.4 * np.exp(-np.square(s / 0.08)))
    z = (v - centre) / (half * np.sqrt(1.0 + tilt * tilt))
    return z, _smoothstep(-0.02, 0.02, s) * _smoothstep(1.02, 0.96, s)


def _broken_rib(ribs: _RibFamily, fracture: _Fracture, t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """What a rib fracture changes in ``ribs.render``: the gap cut out, the lateral fragment moved down by ``step``."""
    before = ribs.render_rib(t, v, fracture.rib)
    medial, lateral = fracture.fragments(t)
    return before * (medial - 1.0) + ribs.render_rib(t, v - fracture.step, fracture.rib) * lateral


def _broken_clavicle(clavicle: tuple[float, float, float, float], fracture: _Fracture, t: np.ndarray,
                     v: np.ndarray, profile: np.ndarray) -> np.ndarray:
    medial, lateral = fracture.fragments(t)
    return profile * medial + _bone_profile(_clavicle_z(clavicle, t, v - fracture.step)[0], cortex=0.4) * lateral


def _fracture_mask(anatomy: _PatientAnatomy, pose: _Pose, fracture: _Fracture) -> np.ndarray:
    """The break: the bone (before and after it broke) within half a gap plus 1.5 px of the gap's edges."""
    index = _SIDES.index(fracture.side)
    ppu = pose.pixels_per_unit
    reach = fracture.gap + 1.5 / ppu  # from the break's centre
    if fracture.clavicle:
        clavicle = anatomy.clavicle[index]
        v_axis = clavicle[0] + clavicle[1] * (fracture.at - _CLAVICLE_T0)
    else:
        ribs = anatomy.posterior_ribs[index]
        v_axis = ribs.axis_v(fracture.at, fracture.rib)
    u0, u1 = sorted((fracture.side * (fracture.at - reach), fracture.side * (fracture.at + reach)))
    window = pose.crop(u0 - 0.02, u1 + 0.02, v_axis - 0.12 - abs(fracture.step), v_axis + 0.12 + abs(fracture.step))
    cu, cv = pose.grid(window)
    t = fracture.side * cu
    if fracture.clavicle:
        before = _bone_profile(_clavicle_z(clavicle, t, cv)[0], cortex=0.4)
        after = _broken_clavicle(clavicle, fracture, t, cv, before)
    else:
        before = ribs.render_rib(t, cv, fracture.rib)
        after = before + _broken_rib(ribs, fracture, t, cv)
    mask = np.zeros((pose.size, pose.size), bool)
    mask[window] = (np.abs(t - fracture.at) < reach) & ((before > 0.3) | (after > 0.3))
    return mask


def _sample_fractures(anatomy: _PatientAnatomy, rng: np.random.Generator) -> tuple[_Fracture, ...]:
    """One broken rib (60 %), two neighbouring ribs broken side by side (25 %) or a clavicle (15 %).

    Ribs break in their posterolateral arc, over the lung (t 0.35-0.7 of the lung's width); the clavicle in its
    middle third. Gap 0.02-0.035 canonical units (4.3-7.5 mm at pose scale 1; 2.6-4.5 px at 256 px), the lateral
    fragment moved 0.6-1.0 rib half-widths (0.016-0.032, 3.4-6.8 mm) up or down (a clavicle's drops).
    """
    kind = rng.random()
    side = int(rng.choice(_SIDES))
    index = _SIDES.index(side)
    ribs, lung = anatomy.posterior_ribs[index], anatomy.lungs[index]

    def gap_and_step() -> tuple[float, float]:
        return rng.uniform(0.02, 0.035), rng.uniform(0.6, 1.0) * ribs.half_thickness * float(rng.choice((-1, 1)))

    at = rng.uniform(0.35, 0.7) * lung.t_lateral

    def over_lung(rib: int) -> bool:  # the break in the lung field, clear of its borders and of the heart
        t, v = np.float32(at), np.float32(ribs.axis_v(at, rib))
        return float(min(lung.sdf(t, v), _heart_outside(anatomy, side * t, v))) > 0.06

    ribs_over_lung = [k for k in range(ribs.count) if over_lung(k)]
    if kind >= 0.15 and ribs_over_lung:
        pairs = [k for k in ribs_over_lung if k + 1 in ribs_over_lung]
        if kind < 0.4 and pairs:
            first = pairs[int(rng.integers(len(pairs)))]
            return tuple(_Fracture(side, k, at + (k - first) * rng.normal(0.0, 0.02), *gap_and_step())
                         for k in (first, first + 1))
        return (_Fracture(side, ribs_over_lung[int(rng.integers(len(ribs_over_lung)))], at, *gap_and_step()),)
    length = anatomy.clavicle[index][3]
    gap, step = gap_and_step()
    return (_Fracture(side, -1, _CLAVICLE_T0 + rng.uniform(0.33, 0.67) * length, gap, abs(step)),)


def _heart_silhouette_ctr(anatomy: _PatientAnatomy) -> float:
    """Cardiothoracic ratio in canonical units: width of the heart above the diaphragm over the lungs' width."""
    a = anatomy
    phi = np.linspace(0.0, 2.0 * math.pi, 1441)
    c, s = math.cos(a.heart_angle), math.sin(a.heart_angle)
    (ax, ay), (hu, hv) = a.heart_axes, a.heart_center
    u = hu + ax * c * np.cos(phi) - ay * s * np.sin(phi)
    v = hv + ax * s * np.cos(phi) + ay * c * np.sin(phi)
    above = v < np.where(u < 0, a.lungs[0].dome_v(-u), a.lungs[1].dome_v(u))
    return float((u[above].max() - u[above].min()) / (a.lungs[0].t_lateral + a.lungs[1].t_lateral))


def _enlarge_heart(anatomy: _PatientAnatomy, ctr: float) -> _PatientAnatomy:
    """The same patient with the heart grown (mostly to the patient's left and down) to cardiothoracic ratio ``ctr``."""
    (ax, ay), (hu, hv) = anatomy.heart_axes, anatomy.heart_center

    def grown(k: float) -> _PatientAnatomy:
        return replace(anatomy, heart_axes=(ax * k, ay * (1.0 + 0.35 * (k - 1.0))),
                       heart_center=(hu + 0.35 * ax * (k - 1.0), hv + 0.2 * ay * (k - 1.0)))

    low, high = 1.0, 3.0
    for _ in range(24):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if _heart_silhouette_ctr(grown(middle)) < ctr else (low, middle)
    return grown(high)


def _heart_mask(anatomy: _PatientAnatomy, pose: _Pose) -> np.ndarray:
    """The cardiac silhouette: heart pixels above the diaphragm."""
    a = anatomy
    reach = max(a.heart_axes) + 0.05
    window = pose.crop(a.heart_center[0] - reach, a.heart_center[0] + reach, a.heart_center[1] - reach,
                       a.heart_center[1] + reach)
    cu, cv = pose.grid(window)
    dome = np.where(cu < 0, a.lungs[0].dome_v(-cu), a.lungs[1].dome_v(cu))
    mask = np.zeros((pose.size, pose.size), bool)
    mask[window] = (_heart_outside(a, cu, cv) < 0) & (cv < dome)
    return mask


def _render_spine_and_trachea(layers: _Layers) -> None:
    """Vertebral bodies in step with the posterior ribs, darker discs, pedicles; the tracheal air column."""
    a, pose = layers.anatomy, layers.pose
    sl = pose.crop(-0.12 + a.spine_shift, 0.12 + a.spine_shift, -1.0, 1.0)
    x = (layers.cu[sl] - a.spine_shift) / 0.07
    ribs = a.posterior_ribs[0]  # rib phase next to the spine (t = 0.05): one vertebra per rib
    phase = ribs.count * np.maximum((layers.cv[sl] - ribs.c1 * 0.05 - ribs.top) / ribs.length, 1e-4) ** ribs.power
    frac = phase - np.floor(phase)
    body = np.sqrt(np.maximum(1.0 - x * x, 0.0))
    disc = np.exp(-np.square((frac - 0.05) / 0.09)) + np.exp(-np.square((frac - 1.05) / 0.09))
    pedicle = np.exp(-(np.square((np.abs(x) - 0.72) / 0.16) + np.square((frac - 0.45) / 0.17)))
    spinous = np.exp(-(np.square(x / 0.12) + np.square((frac - 0.7) / 0.2)))
    layers.density[sl] += _SPINE * (body * (1.0 - 0.35 * disc) + 0.35 * pedicle + 0.2 * spinous)
    sl = pose.crop(-0.1, 0.1, -1.0, -0.1)
    x = (layers.cu[sl] - a.spine_shift * 0.5) / 0.03
    flat_topped = np.exp(-np.square(np.square(x)))
    layers.density[sl] -= _TRACHEA * flat_topped * _smoothstep(-0.14, -0.24, layers.cv[sl])


def _render_gastric_bubble(layers: _Layers) -> None:
    """Air under the image-right (patient's left) dome: round top, flat air-fluid level."""
    a, pose = layers.anatomy, layers.pose
    centre_t = 0.36 * a.body_half_width
    top = float(a.lungs[1].dome_v(np.float32(centre_t))) + 0.06
    sl = pose.crop(centre_t - 0.14, centre_t + 0.14, top - 0.02, top + 0.14)
    x = (layers.cu[sl] - centre_t) / 0.11
    y = (layers.cv[sl] - top) / 0.1
    dome = np.sqrt(x * x + np.square(np.minimum(y - 0.9, 0.0)) / 0.81)
    bubble = _smoothstep(1.0, 0.8, dome) * _smoothstep(-0.05, 0.05, y) * _smoothstep(0.95, 0.85, y)
    layers.density[sl] -= _GASTRIC_BUBBLE * bubble


def _render_hila(layers: _Layers) -> None:
    for side, (hilum_t, hilum_v) in zip(_SIDES, layers.anatomy.hila):
        sl = layers.pose.crop(side * hilum_t - 0.15, side * hilum_t + 0.15, hilum_v - 0.25, hilum_v + 0.25)
        t, v = side * layers.cu[sl], layers.cv[sl]
        layers.vessels[sl] += _HILUM * np.exp(-np.square((t - hilum_t) / 0.05) - np.square((v - hilum_v) / 0.1))


def _render_anatomy(layers: _Layers) -> None:
    _render_body(layers)
    _render_lungs_and_heart(layers)
    _render_ribs_and_clavicles(layers)
    _render_spine_and_trachea(layers)
    _render_gastric_bubble(layers)
    _render_hila(layers)


def _render_vessels(layers: _Layers, fine: np.ndarray | None, full_pose: _Pose) -> None:
    """Splat points along the vessel trees and blur them by calibre class (Gaussian width ~ radius).

    Thin vessels go to ``fine`` (a full-resolution layer) when given, the others to ``layers.vessels``.
    """
    ppu = full_pose.pixels_per_unit
    sigmas = 0.55 * ppu / 512.0 * 2.0 ** np.arange(5)  # blur per calibre class, full-resolution pixels

    def calibre_class(radius: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(np.log2(np.maximum(radius * ppu * 0.6 / sigmas[0], 1e-6))), 0, sigmas.size - 1)

    # points closer than half the blur width: 0.6 px for the thinnest vessels, sparser for thick ones
    samples = [tree.sample(np.maximum(0.5 * sigmas[calibre_class(tree.radius).astype(int)], 0.6) / ppu)
               for tree in layers.anatomy.vessels]
    cu = np.concatenate([side * t for side, (t, _, _, _) in zip(_SIDES, samples)])
    cv = np.concatenate([v for _, v, _, _ in samples])
    radius = np.concatenate([r for _, _, r, _ in samples])
    step_px = np.concatenate([step for _, _, _, step in samples]) * ppu
    # projected density grows with the diameter; small peripheral vessels fade a little faster
    contrast = _VESSEL * (radius / 0.02) ** 1.25
    cls = calibre_class(radius)
    for k, sigma in enumerate(sigmas):
        pick = cls == k
        if not pick.any():
            continue
        pose, target = (full_pose, fine) if fine is not None and sigma < 2.0 else (layers.pose, layers.vessels)
        factor = full_pose.size / pose.size
        x, y = pose.to_pixels(cu[pick], cv[pick])
        # each point stands for step_px of vessel: blurred, a line of density `contrast` at its centre
        weight = contrast[pick] * math.sqrt(2.0 * math.pi) * sigma * step_px[pick] / factor**2
        _add_blurred_points(target, x, y, weight, sigma / factor)


def _add_blurred_points(target: np.ndarray, x: np.ndarray, y: np.ndarray, weight: np.ndarray,
                        sigma: float) -> None:
    """Add weighted points, blurred by ``sigma`` px, to ``target`` (in place), working on their bounding box.

    Below 0.7 px the points are splatted bilinearly and that is blur enough; above, each goes to its nearest
    pixel before the Gaussian blur, which hides the half-pixel rounding.
    """
    margin = int(math.ceil(3.0 * sigma)) + 2
    height, width = target.shape
    x0, x1 = max(int(x.min()) - margin, 0), min(int(x.max()) + margin + 1, width)
    y0, y1 = max(int(y.min()) - margin, 0), min(int(y.max()) + margin + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    shape = (y1 - y0, x1 - x0)
    if sigma < 0.7:
        target[y0:y1, x0:x1] += _splat(x - x0, y - y0, weight, shape)
    else:
        local = _splat(x - x0, y - y0, weight, shape, bilinear=False)
        target[y0:y1, x0:x1] += ndimage.gaussian_filter(local, sigma, truncate=3.0)


def _splat(x: np.ndarray, y: np.ndarray, weight: np.ndarray, shape: tuple[int, int],
           bilinear: bool = True) -> np.ndarray:
    """Splat weighted points into a float32 image of ``shape`` (points outside are dropped)."""
    height, width = shape
    if not bilinear:
        xi, yi = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
        ok = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        out = np.bincount(yi[ok] * width + xi[ok], weights=weight[ok], minlength=height * width)
        return out.reshape(height, width).astype(np.float32)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    xi = np.concatenate([x0, x0 + 1, x0, x0 + 1])
    yi = np.concatenate([y0, y0, y0 + 1, y0 + 1])
    w = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(weight, 4)
    ok = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    out = np.bincount(yi[ok] * width + xi[ok], weights=w[ok], minlength=height * width)
    return out.reshape(height, width).astype(np.float32)


def _upsample2(a: np.ndarray) -> np.ndarray:
    """Bilinear x2 upsampling where each input pixel covers a 2x2 output block (edges clamped)."""
    p = np.pad(a, 1, mode="edge")
    rows = np.empty((2 * a.shape[0], p.shape[1]), np.float32)
    rows[0::2] = 0.75 * p[1:-1] + 0.25 * p[:-2]
    rows[1::2] = 0.75 * p[1:-1] + 0.25 * p[2:]
    out = np.empty((2 * a.shape[0], 2 * a.shape[1]), np.float32)
    out[:, 0::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
    out[:, 1::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
    return out


# ------------------------------------------------------------------------------------------------------------
# lesions, drawn at full resolution. Each renderer returns a _Drawn lesion, or None when it cannot fit.


@dataclass
class _Drawn:
    density: np.ndarray  # added to the image density
    mask: np.ndarray
    vessel_gain: np.ndarray | None = None  # < 1 where the lesion hides the vessel markings
    pleural_side: int | None = None  # the side an effusion or pneumothorax takes
    geometry: dict = field(default_factory=dict)  # canonical position and size, for the lateral view


class _Canvas:
    """Full-resolution state of one image while its lesions are drawn."""

    def __init__(self, anatomy: _PatientAnatomy, pose: _Pose, air: np.ndarray, lungs: np.ndarray):
        self.anatomy, self.pose, self.size = anatomy, pose, pose.size
        self.air, self.lungs = air, lungs
        self.occupied = np.zeros_like(lungs)  # taken by an earlier lesion (plus a small margin)
        self.pleural_sides: set[int] = set()  # sides that already hold an effusion or a pneumothorax
        self.cu, self.cv = pose.grid()
        self._free_distance: np.ndarray | None = None

    def free_distance(self) -> np.ndarray:
        """Pixels to the nearest lung border or earlier lesion (0 outside the free lung)."""
        if self._free_distance is None:
            self._free_distance = np.zeros_like(self.air)
            box = _bbox(self.lungs)
            if box is not None:
                sl = _box_slices(box, 1, self.size)
                self._free_distance[sl] = ndimage.distance_transform_edt(self.lungs[sl] & ~self.occupied[sl])
        return self._free_distance

    def occupy(self, mask: np.ndarray, box: tuple[int, int, int, int]) -> None:
        sl = _box_slices(box, 3, self.size)
        self.occupied[sl] |= ndimage.binary_dilation(mask[sl], iterations=2)
        self._free_distance = None

    @property
    def scale(self) -> float:
        """Image size over 1024 px: lesion sizes are chosen at 1024 px and multiplied by this."""
        return self.size / 1024.0

    def side_mask(self, side: int) -> np.ndarray:
        return self.lungs & ((self.cu > 0) == (side > 0))


def _pick_centre(rng: np.random.Generator, allowed: np.ndarray) -> tuple[int, int] | None:
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        return None
    y, x = divmod(int(candidates[rng.integers(candidates.size)]), allowed.shape[1])
    return y, x


def _place(rng: np.random.Generator, canvas: _Canvas, radius: float, margin: float) -> tuple[int, int, float] | None:
    """A centre at least ``margin * radius`` inside the lungs and away from other lesions, shrinking if needed."""
    radius = max(radius, 2.5)
    for _ in range(4):
        centre = _pick_centre(rng, canvas.free_distance() > radius * margin + 1)
        if centre is not None:
            return (*centre, radius)
        radius = max(radius * 0.7, 2.0)
    return None


def _local_window(size: int, cy: int, cx: int, half: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    h = int(math.ceil(half))
    sy, sx = slice(max(cy - h, 0), min(cy + h + 1, size)), slice(max(cx - h, 0), min(cx + h + 1, size))
    yy, xx = np.mgrid[sy, sx].astype(np.float32)
    return sy, sx, yy - cy, xx - cx


def _lobulated(rng: np.random.Generator, angle: np.ndarray, harmonics: int, amplitude: float) -> np.ndarray:
    r = np.ones_like(angle)
    for k in range(2, 2 + harmonics):
        r += rng.uniform(0.2, 1.0) * amplitude / math.sqrt(k - 1) * np.cos(k * angle + rng.uniform(0, 2 * math.pi))
    return r


def _nodule_or_mass(canvas: _Canvas, rng: np.random.Generator, finding: str) -> _Drawn | None:
    """A lobulated round opacity: nodules 15-60 px across at 1024 px, masses (> 3 cm) 70-150 px, spiculated."""
    if finding == "Nodule":
        radius, amplitude, harmonics, lobulation = rng.uniform(7.5, 30.0), rng.uniform(0.09, 0.2), 3, 0.08
    else:
        radius, amplitude, harmonics, lobulation = rng.uniform(35.0, 75.0), rng.uniform(0.16, 0.28), 10, 0.07
    placed = _place(rng, canvas, radius * canvas.scale, 1.25)
    if placed is None:
        return None
    cy, cx, radius = placed
    sy, sx, dy, dx = _local_window(canvas.size, cy, cx, radius * 1.5 + 2)
    angle = np.arctan2(dy, dx)
    rho = np.sqrt(dx * dx + dy * dy) / (radius * _lobulated(rng, angle, harmonics, lobulation))
    body = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    if finding == "Mass":  # spiculated margin
        spikes = np.maximum(np.cos(int(rng.integers(7, 14)) * angle + rng.uniform(0, 2 * math.pi)), 0.0) ** 8
        body = np.maximum(body, 0.35 * spikes * _smoothstep(1.35, 0.9, rho) * _smoothstep(0.0, 0.9, rho))
    density = np.zeros_like(canvas.air)
    density[sy, sx] = amplitude * body
    mask = np.zeros_like(canvas.lungs)
    mask[sy, sx] = rho < 1.0
    return _Drawn(density, mask & canvas.lungs, geometry=_lesion_geometry(canvas, cy, cx, radius, amplitude))


def _lesion_geometry(canvas: _Canvas, cy: int, cx: int, radius: float, amplitude: float) -> dict:
    return {"u": float(canvas.cu[cy, cx]), "v": float(canvas.cv[cy, cx]),
            "radius": radius / canvas.pose.pixels_per_unit, "amplitude": amplitude}


def _consolidation(canvas: _Canvas, rng: np.random.Generator, finding: str) -> _Drawn | None:
    """A patchy opacity 90-220 px across at 1024 px with a few air bronchograms."""
    placed = _place(rng, canvas, rng.uniform(45.0, 110.0) * canvas.scale, 0.8)
    if placed is None:
        return None
    cy, cx, radius = placed
    sy, sx, dy, dx = _local_window(canvas.size, cy, cx, radius * 1.6)
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    aspect = rng.uniform(0.6, 1.0)
    rho2 = np.square((c * dx + s * dy) / radius) + np.square((-s * dx + c * dy) / (radius * aspect))
    noise = ndimage.gaussian_filter(rng.standard_normal(dx.shape, dtype=np.float32), max(radius / 5.0, 1.0))
    noise /= max(float(noise.std()), 1e-6)
    patchy = _smoothstep(0.05, 0.45, (1.0 - rho2) + 0.35 * noise)
    # air bronchograms: dark branching tubes running out from the hilar side of the opacity
    heading = math.atan2(cy - canvas.size * 0.45, cx - canvas.size * 0.5) + rng.normal(0, 0.3)
    start = (cx - sx.start - math.cos(heading) * radius * 0.6, cy - sy.start - math.sin(heading) * radius * 0.6)
    bronchus = max(2.0 * canvas.scale, 0.6)
    tree = _grow_vessel_tree(rng, start, (heading - 0.35, heading + 0.35), root_radius=bronchus,
                             root_length=radius * 0.5, min_radius=bronchus * 0.45, levels=3)
    bt, bv, _, _ = tree.sample(0.6)
    sigma = max(bronchus, 0.7)
    bronchi = np.zeros(dx.shape, np.float32)
    _add_blurred_points(bronchi, bt, bv, np.full(bt.shape, 0.6 * math.sqrt(2 * math.pi) * sigma), sigma)
    np.clip(bronchi, 0.0, 1.0, out=bronchi)
    amplitude = rng.uniform(0.16, 0.28)
    # the patchy margin may reach past the free lung: fade it out there rather than pile onto other lesions
    patchy *= _smoothstep(0.0, 3.0, canvas.free_distance()[sy, sx]) + ~canvas.lungs[sy, sx]
    density = np.zeros_like(canvas.air)
    bronchograms = 1.0 - 0.35 * bronchi * _smoothstep(0.3, 0.7, patchy)
    density[sy, sx] = amplitude * patchy * bronchograms * canvas.air[sy, sx]
    mask = np.zeros_like(canvas.lungs)
    mask[sy, sx] = patchy > 0.5
    return _Drawn(density, mask & canvas.lungs,
                  geometry=_lesion_geometry(canvas, cy, cx, radius, amplitude) | {"aspect": aspect})


def _free_side(canvas: _Canvas, rng: np.random.Generator) -> int | None:
    sides = [side for side in _SIDES if side not in canvas.pleural_sides]
    return int(rng.choice(sides)) if sides else None


def _effusion(canvas: _Canvas, rng: np.random.Generator, finding: str) -> _Drawn | None:
    """Fluid filling the lung base of one side, its meniscus climbing the lateral chest wall."""
    side = _free_side(canvas, rng)
    if side is None:
        return None
    lung = canvas.anatomy.lungs[_SIDES.index(side)]
    span = np.clip((side * canvas.cu - lung.t_medial) / (lung.t_lateral - lung.t_medial), 0.0, 1.0)
    # fluid up to a level near the dome top (above it: the dome is hidden), its meniscus climbing the chest wall
    above_dome = rng.uniform(-0.05, 0.1)
    rise = rng.uniform(0.22, 0.35) + max(above_dome, 0.0)
    level = lung.v_dome + above_dome - rise * span * span
    # not cut at the mask edge: the air just outside it (the lung's soft border) fills too
    fluid = _smoothstep(0.0, 0.035, canvas.cv - level) * ((canvas.cu > 0) == (side > 0))
    # fluid takes the place of nearly all the air: about as dense as the soft tissue around it
    mask = (fluid > 0.5) & canvas.side_mask(side)
    return _Drawn((0.9 * _LUNG_AIR) * fluid * canvas.air, mask, 1.0 - fluid, side,
                  {"level": lung.v_dome + above_dome, "rise": rise})


def _pneumothorax(canvas: _Canvas, rng: np.random.Generator, finding: str) -> _Drawn | None:
    """Air between the apical-lateral chest wall and the collapsed lung: no vessels, a thin pleural line."""
    side = _free_side(canvas, rng)
    if side is None:
        return None
    lung = canvas.anatomy.lungs[_SIDES.index(side)]
    in_side = canvas.side_mask(side)
    box = _bbox(in_side)
    if box is None:
        return None
    sl = _box_slices(box, 1, canvas.size)
    distance = np.zeros_like(canvas.air)
    distance[sl] = ndimage.distance_transform_edt(in_side[sl])
    depth = max(rng.uniform(0.06, 0.16) * canvas.pose.pixels_per_unit, 2.0)
    v_end = lung.v_apex + rng.uniform(0.3, 0.65)
    taper = np.sqrt(_smoothstep(v_end, v_end - 0.2, canvas.cv))
    rim_depth = depth * taper
    # the apex and the lateral wall, not the mediastinal border
    lateral = _smoothstep(0.08, 0.16, side * canvas.cu - lung.t_medial) * in_side
    line_width = max(1.2 * canvas.scale, 0.6)
    rim = _smoothstep(rim_depth + line_width, rim_depth - line_width, distance) * lateral
    pleural_line = np.exp(-np.square((distance - rim_depth) / line_width)) * lateral * (taper > 0.05)
    collapsed = in_side * (1.0 - rim) * taper
    density = -0.12 * rim * canvas.air + 0.10 * pleural_line + 0.04 * collapsed
    return _Drawn(density, (rim > 0.5) & in_side, 1.0 - rim, side,
                  {"depth": depth / canvas.pose.pixels_per_unit, "v_end": v_end})


_LESION_RENDERERS: dict[str, Callable[[_Canvas, np.random.Generator, str], _Drawn | None]] = {
    "Nodule": _nodule_or_mass,
    "Mass": _nodule_or_mass,
    "Consolidation": _consolidation,
    "Effusion": _effusion,
    "Pneumothorax": _pneumothorax,
}


def _add_lesions(canvas: _Canvas, rng: np.random.Generator, findings: Sequence[str],
                 geometry: list[tuple[str, int | None, dict]] | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, list[PhantomLesion]]:
    """Draw the lesions that fit; returns added density, vessel gain (``None`` if untouched) and the lesions.

    ``geometry``, when given, receives ``(finding, pleural side, canonical geometry)`` of each lesion drawn.

    A lesion is redrawn (new random shape) until it is large enough and its box centre lies in a lung, so a
    patch centred on any box sees lung; after four tries it is left out.
    """
    min_area = max(12.0, 60.0 * canvas.scale**2)
    density = np.zeros_like(canvas.air)
    vessel_gain = None
    lesions: list[PhantomLesion] = []
    # pleural lesions first: they go where anatomy puts them, the round ones then find room around them
    for finding in sorted(findings, key=lambda name: name not in ("Effusion", "Pneumothorax")):
        for _ in range(4):
            drawn = _LESION_RENDERERS[finding](canvas, rng, finding)
            if drawn is None:
                break
            box = _bbox(drawn.mask)
            if box is None or drawn.mask.sum() < min_area or not canvas.lungs[(box[1] + box[3]) // 2,
                                                                               (box[0] + box[2]) // 2]:
                continue
            density += drawn.density
            if drawn.vessel_gain is not None:
                vessel_gain = drawn.vessel_gain if vessel_gain is None else vessel_gain * drawn.vessel_gain
            if drawn.pleural_side is not None:
                canvas.pleural_sides.add(drawn.pleural_side)
            canvas.occupy(drawn.mask, box)
            lesions.append(PhantomLesion(finding, drawn.mask, box))
            if geometry is not None:
                geometry.append((finding, drawn.pleural_side, drawn.geometry))
            break
    return density, vessel_gain, lesions


# ------------------------------------------------------------------------------------------------------------
# one image


@dataclass(frozen=True)
class _Acquisition:
    """What changes from one exposure to the next: pose, exposure curve, gradient and noise levels."""

    pose: _Pose
    exposure_gain: float
    exposure_offset: float
    gamma: float
    gradient: tuple[float, float]
    quantum_noise: float
    electronic_noise: float


def _sample_acquisition(rng: np.random.Generator, size: int) -> _Acquisition:
    pose = _Pose(size=size, angle=rng.normal(0.0, 0.03), scale=rng.uniform(0.95, 1.05),
                 shift=(rng.normal(0.0, 0.025), rng.normal(-0.04, 0.025)))
    return _Acquisition(pose=pose, exposure_gain=rng.uniform(0.9, 1.1), exposure_offset=rng.normal(0.0, 0.03),
                        gamma=rng.uniform(0.85, 1.15), gradient=(rng.normal(0, 0.02), rng.normal(0, 0.03)),
                        quantum_noise=rng.uniform(0.006, 0.014), electronic_noise=rng.uniform(0.002, 0.005))


def _render(anatomy: _PatientAnatomy, acquisition: _Acquisition, rng: np.random.Generator,
            findings: Sequence[str], bone_pairs: bool = False,
            lateral_rng: np.random.Generator | None = None) -> PhantomRadiograph:
    """Render one radiograph; with ``bone_pairs`` also its soft-tissue and bone images and rib mask.

    The bone pair draws nothing from ``rng`` and leaves the radiograph bit-identical: the soft-tissue image is
    the radiograph's density less the rib-and-clavicle layer, with the same noise added, through the same
    exposure curve. ``Cardiomegaly`` and ``Fracture`` change this image's anatomy (drawn from ``rng`` first, only
    when asked for). With ``lateral_rng``, the lateral view too, drawn from that generator only.
    """
    pose = acquisition.pose
    size = pose.size
    lesion_findings = [finding for finding in findings if finding in _LESION_RENDERERS]
    if "Cardiomegaly" in findings:
        anatomy = _enlarge_heart(anatomy, rng.uniform(0.55, 0.65))
    if "Fracture" in findings:
        anatomy = replace(anatomy, fractures=_sample_fractures(anatomy, rng))
    # smooth anatomy at half resolution for large images, thin vessels, lesions and noise at full resolution
    factor = 2 if size >= 512 and size % 2 == 0 else 1
    coarse = _Layers(anatomy, _Pose(size // factor, pose.angle, pose.scale, pose.shift), bone_layer=bone_pairs)
    _render_anatomy(coarse)
    gx, gy = acquisition.gradient
    coarse.density += gx * coarse.cu + gy * coarse.cv
    fine = np.zeros((size, size), np.float32) if factor > 1 else None
    _render_vessels(coarse, fine, pose)
    healthy = coarse.density + (coarse.vessels - _LUNG_AIR) * coarse.air
    if fine is None:
        density, air, lung_sdf = healthy, coarse.air, coarse.lung_sdf
    else:
        air = _upsample2(coarse.air)
        density = _upsample2(healthy) + fine * air
        lung_sdf = _upsample2(coarse.lung_sdf)
    lungs = lung_sdf > 0
    lesions: list[PhantomLesion] = []
    geometry: list[tuple[str, int | None, dict]] = []
    if lesion_findings:
        canvas = _Canvas(anatomy, pose, air, lungs)
        lesion_density, vessel_gain, lesions = _add_lesions(canvas, rng, lesion_findings, geometry)
        density += lesion_density
        if vessel_gain is not None:  # lesions that hide the vessel markings behind them
            vessels = coarse.vessels if fine is None else _upsample2(coarse.vessels) + fine
            density += (vessel_gain - 1.0) * vessels * air
    heart_mask = _heart_mask(anatomy, pose)
    if "Cardiomegaly" in findings:
        lesions.append(PhantomLesion("Cardiomegaly", heart_mask.copy(), _bbox(heart_mask)))
    for fracture in anatomy.fractures:
        mask = _fracture_mask(anatomy, pose, fracture)
        box = _bbox(mask)
        if box is not None:
            lesions.append(PhantomLesion("Fracture", mask, box))
    if bone_pairs:
        bone_density, bone_profile = ((coarse.bone, coarse.bone_profile) if fine is None else
                                      (_upsample2(coarse.bone), _upsample2(coarse.bone_profile)))
        soft_density = density - bone_density  # everything but the ribs and clavicles, before the noise
    # Poisson-like quantum noise grows where fewer photons arrive (dense regions), plus electronic noise
    sigma = acquisition.quantum_noise * np.exp(1.2 * (density - 0.5)) + acquisition.electronic_noise
    noise = sigma * rng.standard_normal(density.shape, dtype=np.float32)
    density += noise

    def expose(d: np.ndarray) -> np.ndarray:
        shown = np.clip(acquisition.exposure_gain * d + acquisition.exposure_offset, 0.0, 1.0)
        shown **= acquisition.gamma
        return shown

    image = expose(density)
    right = pose.right_half()
    lung_boxes = [box for box in (_bbox(lungs & ~right), _bbox(lungs & right)) if box is not None]
    radiograph = PhantomRadiograph(image=image, lung_mask=lungs, lung_boxes=lung_boxes, lesions=lesions,
                                   heart_mask=heart_mask)
    if bone_pairs:
        soft_density += noise  # the radiograph's noise realisation, so that it cancels in the bone image
        radiograph.soft_tissue = expose(soft_density)
        radiograph.bone = image - radiograph.soft_tissue
        radiograph.rib_mask = lungs & (bone_profile >= RIB_MASK_THRESHOLD)
    if lateral_rng is not None:
        radiograph.lateral = _render_lateral(anatomy, _sample_acquisition(lateral_rng, size), lateral_rng, geometry)
    return radiograph


# ------------------------------------------------------------------------------------------------------------
# the lateral view: (w, v) canonical coordinates, w to the image right = posterior (a left lateral, the patient
# facing the image left), v down as in the frontal view, so that findings keep their height

_LATERAL_DEPTH = 0.62  # half the chest's depth over half its width


def _render_lateral(anatomy: _PatientAnatomy, acquisition: _Acquisition, rng: np.random.Generator,
                    lesions: Sequence[tuple[str, int | None, dict]]) -> PhantomLateral:
    """Render the lateral view: smooth anatomy and findings at half resolution from 512 px, noise at full."""
    a, pose = anatomy, acquisition.pose
    size = pose.size
    factor = 2 if size >= 512 and size % 2 == 0 else 1
    coarse = _Pose(size // factor, pose.angle, pose.scale, pose.shift)
    w, v = coarse.grid()
    depth = _LATERAL_DEPTH * a.body_half_width
    # body from the side: a gently convex chest wall and back, the abdomen below, the neck above the rounded
    # shoulders, the arms and shoulders over the upper chest
    front = -depth * (1.0 - 0.1 * np.square(v + 0.1))
    back = depth * (1.0 - 0.06 * np.square(v - 0.1))
    shoulders = a.shoulder_v + 0.05 + 0.9 * np.square(w - 0.05)
    torso = np.sqrt(np.maximum(1.0 - np.square((2.0 * w - front - back) / (back - front)), 0.0))
    torso *= _smoothstep(0.0, 0.1, v - shoulders)
    neck = np.sqrt(np.maximum(1.0 - np.square((w - 0.1) / 0.24), 0.0)) * 0.9
    density = _AIR_OUTSIDE + (_SOFT_TISSUE - _AIR_OUTSIDE) * np.maximum(torso, neck)
    density += 0.06 * torso * _smoothstep(-0.25, -0.6, v)
    # the two lungs, seen through each other: apex, retrosternal and posterior borders, each its own dome (the
    # patient's right one higher), deepest in the posterior costophrenic sulcus
    w_front, w_back, w_dome, w_spine = -depth + 0.13, depth - 0.1, -0.15 * depth, depth - 0.3
    domes, sdfs = [], []
    for lung in a.lungs:
        dome = lung.v_dome + np.where(w > w_dome, np.float32(0.75), np.float32(0.35)) * np.square(w - w_dome)
        apex = v - (lung.v_apex + 0.04 + 0.9 * np.square(w - 0.05))
        domes.append(dome)
        sdfs.append(np.minimum(np.minimum(w - w_front, w_back - w), np.minimum(apex, dome - v)))
    # the heart: anterior-inferior, against the front of the chest, on the diaphragm; its long axis tilted
    # forwards and down. An enlarged heart reaches back towards the spine and up
    heart_a, heart_b, angle = 0.85 * a.heart_axes[0], 0.95 * a.heart_axes[1], -0.6
    c, s = math.cos(angle), math.sin(angle)
    heart_w = w_front - 0.04 + math.hypot(heart_a * c, heart_b * s)
    heart_v = a.heart_center[1] - 0.04
    du, dv = w - heart_w, v - heart_v
    heart_outside = (np.sqrt(np.square((c * du + s * dv) / heart_a) + np.square((-s * du + c * dv) / heart_b)) - 1.0
                     ) * min(heart_a, heart_b)
    heart = _smoothstep(0.02, -0.06, heart_outside)
    density += 1.3 * _HEART * heart
    # the lungs thin out behind the vertebral bodies (the paravertebral gutters)
    thin = 1.0 - 0.35 * _smoothstep(w_spine, w_back, w)
    airs = [_smoothstep(-0.025, 0.045, sdf) * (0.82 + 0.18 * _smoothstep(-0.7, -0.2, v)) * (1.0 - 0.7 * heart)
            * thin for sdf in sdfs]
    # spine at the back (thoracic kyphosis), one vertebra per rib as in the frontal view, posterior elements
    sl = coarse.crop(w_spine - 0.3, w_spine + 0.3, -1.0, 1.0)
    ws, vs = w[sl], v[sl]
    ribs = a.posterior_ribs[0]
    phase = ribs.count * np.maximum((vs - ribs.c1 * 0.05 - ribs.top) / ribs.length, 1e-4) ** ribs.power
    frac = phase - np.floor(phase)
    x = (ws - (w_spine - 0.08 * np.square(vs))) / 0.075
    body = _smoothstep(1.1, 0.85, np.abs(x)) + 0.4 * np.exp(-np.square((np.abs(x) - 0.92) / 0.1))
    disc = np.exp(-np.square((frac - 0.05) / 0.09)) + np.exp(-np.square((frac - 1.05) / 0.09))
    arch = np.exp(-(np.square((x - 2.2) / 0.6) + np.square((frac - 0.45) / 0.2)))
    density[sl] += 2.0 * _SPINE * (body * (1.0 - 0.5 * disc) + 0.5 * arch)
    # sternum at the front, its lower end further forwards
    sl = coarse.crop(-depth, -depth + 0.2, -0.7, 0.3)
    ws, vs = w[sl], v[sl]
    z = (ws - (-depth + 0.1 - 0.03 * (vs + 0.62))) / 0.022
    density[sl] += 0.09 * _bone_profile(z, cortex=0.4) * _smoothstep(-0.68, -0.6, vs) * _smoothstep(0.27, 0.2, vs)
    # ribs from the spine forwards and down, thinner than seen from the front, fading into the costal
    # cartilages; both sides, a little apart (the far side is magnified)
    sl = coarse.crop(w_front, w_spine + 0.12, -1.0, 1.0)
    ws, vs = w[sl], v[sl]
    t = w_spine + 0.12 - ws
    for far, (side_ribs, dome, air) in enumerate(zip(a.posterior_ribs, domes, airs)):
        lateral_ribs = replace(side_ribs, c1=0.25 + 0.03 * far, c2=0.35, c3=0.0, t_bend=2.0, t_fade=(0.0, 0.06),
                               top=side_ribs.top + 0.015 * far, half_thickness=0.7 * side_ribs.half_thickness)
        fade = _smoothstep(w_front, w_front + 0.25, ws) * (1.0 - 0.8 * _smoothstep(0.0, 0.15, vs - dome[sl]))
        fade *= _smoothstep(0.0, 0.3, torso[sl])  # none above the shoulders
        density[sl] += 0.6 * _POSTERIOR_RIB * (0.4 + 0.6 * air[sl]) * fade * lateral_ribs.render(t, vs)
    # trachea down to the carina, tilting backwards; the gastric bubble under the patient's left dome
    sl = coarse.crop(-0.2, 0.15, -1.0, -0.05)
    ws, vs = w[sl], v[sl]
    x = (ws - (-0.05 + 0.1 * (vs + 1.0))) / 0.035
    density[sl] -= 1.4 * _TRACHEA * np.exp(-np.square(np.square(x))) * _smoothstep(-0.1, -0.2, vs)
    bubble_w = -0.25 * depth
    top = float(a.lungs[1].v_dome + 0.35 * (bubble_w - w_dome) ** 2) + 0.06
    sl = coarse.crop(bubble_w - 0.12, bubble_w + 0.12, top - 0.02, top + 0.12)
    x, y = (w[sl] - bubble_w) / 0.1, (v[sl] - top) / 0.09
    dome_shape = np.sqrt(x * x + np.square(np.minimum(y - 0.9, 0.0)) / 0.81)
    density[sl] -= 0.8 * _GASTRIC_BUBBLE * (_smoothstep(1.0, 0.8, dome_shape) * _smoothstep(-0.05, 0.05, y)
                                            * _smoothstep(0.95, 0.85, y))
    # lung markings: the hila and a smooth vascular texture fading to the periphery
    ppu = coarse.pixels_per_unit
    hilum = np.exp(-np.square((w - 0.02) / 0.1) - np.square((v + 0.05) / 0.12))
    texture = ndimage.gaussian_filter(rng.standard_normal(w.shape, dtype=np.float32), max(0.012 * ppu, 0.7))
    texture *= 1.0 / max(float(texture.std()), 1e-6)
    vessels = 1.3 * _HILUM * hilum + 0.02 * texture * (0.4 + 0.6 * hilum)
    lesion_density = np.zeros_like(density)
    for finding, side, g in lesions:
        if side is not None:  # pleural findings take one lung's air away
            index = _SIDES.index(side)
            if finding == "Effusion":
                back = np.square(np.clip((w - w_dome) / (w_back - w_dome), 0.0, 1.0))
                front = np.square(np.clip((w_dome - w) / (w_dome - w_front), 0.0, 1.0))
                level = g["level"] + 0.06 - g["rise"] * back - 0.3 * g["rise"] * front
                airs[index] = airs[index] * (1.0 - 0.9 * _smoothstep(0.0, 0.035, v - level))
            else:  # pneumothorax: a thin pleural line under the apex, no markings above it
                apex = v - (a.lungs[index].v_apex + 0.04 + 0.9 * np.square(w - 0.05))
                line_depth = 0.6 * g["depth"]
                above_end = _smoothstep(g["v_end"], g["v_end"] - 0.15, v)
                rim = _smoothstep(line_depth + 0.01, line_depth - 0.01, apex) * above_end * (sdfs[index] > 0)
                line = np.exp(-np.square((apex - line_depth) / 0.006)) * above_end * (sdfs[index] > -0.01)
                lesion_density += 0.05 * line - 0.03 * rim * airs[index]
            continue
        radius = g["radius"]
        room = (w_front + radius + 0.03, w_back - radius - 0.03)
        centre = rng.uniform(*room) if room[0] < room[1] else 0.5 * (w_front + w_back)
        if finding == "Consolidation":
            rho2 = (np.square((w - centre) / radius) + np.square((v - g["v"]) / (radius * g["aspect"])))
            near = rho2 < 3.0
            noise = np.zeros_like(density)
            box = _bbox(near)
            if box is not None:
                sl = _box_slices(box, 0, coarse.size)
                noise[sl] = ndimage.gaussian_filter(rng.standard_normal(noise[sl].shape, dtype=np.float32),
                                                    max(radius * ppu / 5.0, 0.7))
                noise *= 1.0 / max(float(noise[sl].std()), 1e-6)
            patchy = _smoothstep(0.05, 0.45, (1.0 - rho2) + 0.35 * noise)
            lesion_density += g["amplitude"] * patchy * 0.5 * (airs[0] + airs[1])
        else:
            rho2 = np.square((w - centre) / radius) + np.square((v - g["v"]) / radius)
            lesion_density += g["amplitude"] * np.sqrt(np.maximum(1.0 - rho2, 0.0))
    air = 0.5 * (airs[0] + airs[1])
    density += (vessels - _LUNG_AIR) * air + lesion_density
    lung_sdf = np.minimum(np.maximum(sdfs[0], sdfs[1]), heart_outside)
    heart_sdf = np.minimum(-heart_outside, np.maximum(domes[0], domes[1]) - v)
    gx, gy = acquisition.gradient
    density += gx * w + gy * v
    if factor > 1:
        density, lung_sdf, heart_sdf = _upsample2(density), _upsample2(lung_sdf), _upsample2(heart_sdf)
    sigma = acquisition.quantum_noise * np.exp(1.2 * (density - 0.5)) + acquisition.electronic_noise
    density += sigma * rng.standard_normal(density.shape, dtype=np.float32)
    image = np.clip(acquisition.exposure_gain * density + acquisition.exposure_offset, 0.0, 1.0)
    image **= acquisition.gamma
    return PhantomLateral(image=image.astype(np.float32, copy=False), lung_mask=lung_sdf > 0, heart_mask=heart_sdf > 0)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def make_phantom(size: int = 256, seed: int = 0, findings: Sequence[str] = (), *,
                 bone_pairs: bool = False, lateral: bool = False) -> PhantomRadiograph:
    """Render one phantom in memory: float32 ``(size, size)`` in [0, 1], lungs dark, with its masks.

    ``findings`` lists findings from :data:`CLASSIFICATION_FINDINGS` to draw: lesion types of :data:`FINDINGS`
    (repeat a name for several; a lesion that cannot fit, e.g. a second pleural lesion on a side that already has
    one, is left out), ``Cardiomegaly`` (the heart enlarged to a cardiothoracic ratio of 0.55-0.65) and
    ``Fracture`` (one or two broken ribs or a broken clavicle).

    ``bone_pairs``: also render the soft-tissue (rib- and clavicle-free) image, the bone image and the rib mask
    (:class:`PhantomRadiograph`); the radiograph itself is the same, bit for bit, either way.
    ``lateral``: also render the lateral view, :attr:`PhantomRadiograph.lateral` (from a random stream of its
    own: the frontal view is the same, bit for bit, either way).

    >>> radiograph = make_phantom(256, seed=1, findings=("Nodule",))
    >>> radiograph.image.shape, radiograph.findings
    ((256, 256), ['Nodule'])
    >>> paired = make_phantom(256, seed=1, findings=("Nodule",), bone_pairs=True)
    >>> bool((paired.image == radiograph.image).all())
    True
    >>> bool(np.allclose(paired.soft_tissue + paired.bone, paired.image, rtol=0, atol=1e-6))
    True
    >>> enlarged = make_phantom(256, seed=1, findings=("Cardiomegaly",), lateral=True)
    >>> 0.53 < enlarged.cardiothoracic_ratio < 0.67, enlarged.lateral.image.shape
    (True, (256, 256))
    """
    _check_size(size)
    unknown = sorted(set(findings) - set(CLASSIFICATION_FINDINGS))
    if unknown:
        raise ValueError(f"unknown findings {unknown}; expected names from {list(CLASSIFICATION_FINDINGS)}")
    anatomy = _sample_patient(_rng(seed, 1))
    image_rng = _rng(seed, 2)
    return _render(anatomy, _sample_acquisition(image_rng, size), image_rng, findings, bone_pairs,
                   _rng(seed, 3) if lateral else None)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")


# ------------------------------------------------------------------------------------------------------------
# files


def _encode_png(pixels: np.ndarray, strategy: int) -> bytes:
    """Greyscale PNG (8- or 16-bit, no filtering) of a 2-D uint8/uint16 array.

    Pillow's encoder picks a filter for every row, which does not pay on noisy 16-bit frames; writing the
    rows unfiltered is about three times faster for files of the same size (Pillow reads them back in the tests).
    """
    height, width = pixels.shape
    bit_depth = 8 * pixels.dtype.itemsize
    rows = np.zeros((height, 1 + width * pixels.dtype.itemsize), np.uint8)  # filter byte 0 = None
    rows[:, 1:] = pixels.astype(pixels.dtype.newbyteorder(">"), copy=False).view(np.uint8).reshape(height, -1)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 15, 9, strategy)
    data = compressor.compress(rows.tobytes()) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _write_image_png(path: Path, image: np.ndarray) -> None:
    # the low bits are noise: Huffman coding alone compresses as well as a full LZ77 search, much faster
    path.write_bytes(_encode_png(np.rint(image * 65535.0).astype(np.uint16), zlib.Z_HUFFMAN_ONLY))


def _write_mask_png(path: Path, mask: np.ndarray) -> None:
    path.write_bytes(_encode_png(mask.astype(np.uint8) * np.uint8(255), zlib.Z_RLE))


@dataclass(frozen=True)
class _ImagePlan:
    """What one output image will be, decided before anything is rendered."""

    index: int
    patient: int  # 1-based, as NIH's Patient ID
    follow_up: int
    findings: tuple[str, ...]  # lesion types to draw; empty for a healthy image
    dicom: bool
    monochrome1: bool
    bits_stored: int

    @property
    def stem(self) -> str:
        return f"phantom_{self.index:05d}"

    @property
    def image_name(self) -> str:
        return self.stem + (".dcm" if self.dicom else ".png")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _plan_images(num_images: int, seed: int, abnormal_fraction: float, dicom_fraction: float,
                 monochrome1_fraction: float, classification: bool = False,
                 pneumothorax: bool = False) -> list[_ImagePlan]:
    """Patients, abnormal images and their findings, formats. ``classification`` draws other findings (from a
    stream of their own, :data:`CLASSIFICATION_PROBABILITIES`) for the same abnormal images; ``pneumothorax``
    gives each abnormal image one ``Pneumothorax`` only; all else stays."""
    rng = _rng(seed, 0)
    patients: list[range] = []
    start = 0
    while start < num_images:
        count = int(rng.integers(_PATIENT_IMAGES[0], _PATIENT_IMAGES[1] + 1))
        patients.append(range(start, min(start + count, num_images)))
        start += count
    # abnormal images: the last follow-ups of patients taken in random order, exactly the requested number
    n_abnormal = _round_half_up(abnormal_fraction * num_images)
    abnormal: set[int] = set()
    order = rng.permutation(len(patients))
    for p in order:
        if len(abnormal) >= n_abnormal:
            break
        images = patients[p]
        take = min(int(rng.integers(1, len(images) + 1)), n_abnormal - len(abnormal))
        abnormal.update(images[len(images) - take:])
    for p in order:  # still short: earlier follow-ups of the same patients
        for index in reversed(patients[p]):
            if len(abnormal) < n_abnormal:
                abnormal.add(index)
    names, weights = list(_FINDING_WEIGHTS), np.array(list(_FINDING_WEIGHTS.values()))
    findings = {}
    for index in sorted(abnormal):
        count = 1 + int(rng.random() < 0.35) + int(rng.random() < 0.1)
        findings[index] = tuple(str(name) for name in rng.choice(names, size=count, replace=False,
                                                                 p=weights / weights.sum()))
    if classification:  # each finding independently; again while an image has none
        finding_rng = _rng(seed, 4)
        names = list(CLASSIFICATION_PROBABILITIES)
        probabilities = np.array(list(CLASSIFICATION_PROBABILITIES.values()))
        for index in sorted(abnormal):
            drawn = np.zeros(len(names), bool)
            while not drawn.any():
                drawn = finding_rng.random(len(names)) < probabilities
            findings[index] = tuple(name for name, present in zip(names, drawn) if present)
    if pneumothorax:
        findings = dict.fromkeys(findings, (PNEUMOTHORAX,))
    n_dicom = _round_half_up(dicom_fraction * num_images)
    dicom_order = [int(i) for i in rng.permutation(num_images)[:n_dicom]]
    dicom, monochrome1 = set(dicom_order), set(dicom_order[:_round_half_up(monochrome1_fraction * n_dicom)])
    bits = rng.choice([12, 14], size=num_images)
    plans = []
    for patient, images in enumerate(patients, start=1):
        for follow_up, index in enumerate(images):
            plans.append(_ImagePlan(index=index, patient=patient, follow_up=follow_up,
                                    findings=findings.get(index, ()), dicom=index in dicom,
                                    monochrome1=index in monochrome1, bits_stored=int(bits[index])))
    return plans


def _study_date(plan: _ImagePlan) -> datetime.date:
    return _STUDY_EPOCH + datetime.timedelta(days=plan.patient % 365 + 120 * plan.follow_up)


def _patient_age(anatomy: _PatientAnatomy, plan: _ImagePlan) -> int:
    return anatomy.age + (120 * plan.follow_up) // 365


# derived images of the bone pair, written as DICOM next to a DICOM radiograph: ImageType value 3, series
# number and description
_DERIVED_SERIES = {"bone_suppressed": ("SOFT_TISSUE", 2, "CHEST PA SOFT TISSUE (RIBS AND CLAVICLES REMOVED)"),
                   "bone": ("BONE", 3, "CHEST PA BONE (RIBS, CLAVICLES)")}
_LATERAL_SERIES = (4, "CHEST LATERAL")  # series number and description of the lateral view


def _write_dicom(path: Path, image: np.ndarray, plan: _ImagePlan, anatomy: _PatientAnatomy, seed: int,
                 derived: str | None = None, lateral: bool = False) -> None:
    """A CR Image Storage file with synthetic patient fields (PHANTOM^00003...) and no real identifiers.

    ``derived`` (a key of ``_DERIVED_SERIES``): an image of the bone pair, in the radiograph's study with its own
    series and instance UIDs and ImageType DERIVED, SECONDARY, then SOFT_TISSUE or BONE; the radiograph's bit
    depth, photometric interpretation and window. ``lateral``: the lateral view (ViewPosition LL, patient
    orientation P, F), in the radiograph's study with a series of its own, stored like the radiograph.
    """
    size = image.shape[0]
    max_value = (1 << plan.bits_stored) - 1
    pixels = np.rint(image * max_value).astype(np.uint16)
    if plan.monochrome1:  # stored inverted: high values are dark
        pixels = np.uint16(max_value) - pixels

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=["cxr-monai phantom", str(seed), *map(str, parts)])

    derived_parts = (() if derived is None else (derived,)) + (("lateral",) if lateral else ())
    sop_instance_uid = uid("image", plan.index, *derived_parts)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    date = _study_date(plan).strftime("%Y%m%d")
    age = _patient_age(anatomy, plan)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"] if derived is None else ["DERIVED", "SECONDARY", _DERIVED_SERIES[derived][0]]
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.AccessionNumber = f"PH{plan.patient:05d}{plan.follow_up:02d}"
    ds.Modality = "CR"
    ds.Manufacturer = "cxr-monai phantom"
    ds.InstitutionName = "PHANTOM GENERAL HOSPITAL"
    ds.ReferringPhysicianName = "PHANTOM^REFERRER"
    ds.StudyDescription = "CHEST PA"
    ds.PatientName = f"PHANTOM^{plan.patient:05d}"
    ds.PatientID = f"PHANTOM{plan.patient:05d}"
    ds.PatientBirthDate = f"{_study_date(plan).year - age:04d}0101"
    ds.PatientSex = anatomy.sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.StudyInstanceUID = uid("study", plan.patient, plan.follow_up)
    ds.SeriesInstanceUID = uid("series", plan.patient, plan.follow_up, *derived_parts)
    ds.StudyID = f"{plan.follow_up + 1}"
    ds.SeriesNumber = 1
    if derived is not None:
        ds.SeriesNumber, ds.SeriesDescription = _DERIVED_SERIES[derived][1:]
    if lateral:
        ds.SeriesNumber, ds.SeriesDescription = _LATERAL_SERIES
        ds.ViewPosition = "LL"
    ds.InstanceNumber = 1
    # rows run to the patient's left (in the lateral view to the back), columns to the feet
    ds.PatientOrientation = ["P", "F"] if lateral else ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if plan.monochrome1 else "MONOCHROME2"
    ds.Rows = ds.Columns = size
    spacing = f"{FIELD_OF_VIEW_MM / size:.10g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = plan.bits_stored
    ds.HighBit = plan.bits_stored - 1
    ds.PixelRepresentation = 0
    # a full-range linear window: read with or without VOI LUT, every format gives the same picture
    ds.WindowCenter = f"{(max_value + 1) / 2:g}"
    ds.WindowWidth = f"{max_value + 1}"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels.astype("<u2", copy=False).tobytes()
    ds.save_as(path, enforce_file_format=True)


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`generate_phantoms` wrote; paths in ``images`` are relative to ``out_dir``."""

    out_dir: Path
    size: int
    num_patients: int
    images: tuple[str, ...]
    num_abnormal: int
    num_dicom: int
    num_monochrome1: int
    finding_counts: dict[str, int]  # images per finding
    splits: dict[str, int]  # datalist entries per key
    datalist: Path
    data_entry_csv: Path
    bbox_csv: Path
    bone_pairs: bool = False  # bone_suppressed/, bones/ and rib_masks/ written too
    classification: bool = False  # label_names and labels in the datalist, laterals/ written too
    pneumothorax: bool = False  # one pneumothorax per abnormal image, a lesion mask for every image, train-rle.csv

    @property
    def num_images(self) -> int:
        return len(self.images)

    def format(self) -> str:
        findings = ", ".join(f"{name} {count}" for name, count in self.finding_counts.items()) or "none"
        splits = ", ".join(f"{key} {count}" for key, count in self.splits.items())
        pairs = "; bone pairs in bone_suppressed/, bones/, rib_masks/" if self.bone_pairs else ""
        classification = (f"; multi-hot labels ({len(CLASSIFICATION_FINDINGS)} names) and lateral views in "
                          "laterals/" if self.classification else "")
        pneumothorax = ("; a lesion mask for every image (blank when normal) and train-rle.csv"
                        if self.pneumothorax else "")
        return (f"{self.num_images} phantoms of {self.size} px ({self.num_patients} patients) in {self.out_dir}: "
                f"{self.num_abnormal} abnormal ({findings}); {self.num_dicom} DICOM "
                f"({self.num_monochrome1} MONOCHROME1); datalist: {splits}{pairs}{classification}{pneumothorax}")


_OUTPUT_PATTERNS = ("images/phantom_*.png", "images/phantom_*.dcm", "masks/lungs/phantom_*.png",
                    "masks/lesions/phantom_*.png", "datalist.json", "Data_Entry_2017.csv", "BBox_List_2017.csv",
                    "train-rle.csv",
                    "bone_suppressed/phantom_*.png", "bone_suppressed/phantom_*.dcm", "bones/phantom_*.png",
                    "bones/phantom_*.dcm", "rib_masks/phantom_*.png", "laterals/phantom_*.png",
                    "laterals/phantom_*.dcm")
_BONE_PAIR_DIRS = {"bone_suppressed": "bone_suppressed", "bone": "bones", "rib_mask": "rib_masks"}  # datalist key
_LATERAL_DIR = "laterals"


def _prepare_out_dir(out_dir: Path, overwrite: bool, bone_pairs: bool = False, classification: bool = False) -> None:
    previous = [path for pattern in _OUTPUT_PATTERNS for path in sorted(out_dir.glob(pattern))]
    if previous and not overwrite:
        raise FileExistsError(f"{out_dir}: already holds phantom files ({previous[0].relative_to(out_dir)}, ...); "
                              "pass overwrite=True (--overwrite) to replace them")
    for path in previous:  # only files this generator writes; anything else in the directory stays
        path.unlink()
    for sub in ("images", "masks/lungs", "masks/lesions", *(_BONE_PAIR_DIRS.values() if bone_pairs else ()),
                *((_LATERAL_DIR,) if classification else ())):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _datalist_json(document: dict) -> str:
    """JSON with one datalist entry per line: readable, and diffs stay small."""
    parts = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            body = ",\n".join("  " + json.dumps(entry) for entry in value)
            parts.append(f" {json.dumps(key)}: [\n{body}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def generate_phantoms(
    out_dir: str | Path,
    num_images: int = 20,
    size: int = 1024,
    seed: int = 0,
    abnormal_fraction: float | None = None,
    dicom_fraction: float = 0.25,
    monochrome1_fraction: float = 0.5,
    *,
    overwrite: bool = False,
    bone_pairs: bool = False,
    classification: bool = False,
    pneumothorax: bool = False,
) -> PhantomSummary:
    """Write ``num_images`` phantoms with masks, NIH-style CSVs and a datalist under ``out_dir``.

    - ``abnormal_fraction``: share of images with one to three lesions (rounded half up to whole images); default
      0.3, or 0.5 with ``pneumothorax``.
    - ``dicom_fraction``: share of images written as CR DICOM instead of 16-bit PNG;
      ``monochrome1_fraction``: share of those stored MONOCHROME1.
    - Synthetic patients have one to four follow-up images; the datalist splits healthy images by patient
      (15 % validation, at least 15 % test; every patient with an abnormal image is in test).
    - ``overwrite``: replace the phantom files of an earlier run (other files in ``out_dir`` stay).
    - ``bone_pairs``: also write each image's bone-suppression pair, the soft-tissue image (ribs and clavicles
      left out) in ``bone_suppressed/`` and the bone image in ``bones/``, in the radiograph's format, and its rib
      mask in ``rib_masks/``; datalist keys ``bone_suppressed``, ``bone`` and ``rib_mask``
      (:class:`PhantomRadiograph`). Every other file is the same, byte for byte, with or without them.
    - ``classification``: a multi-label set for a frontal + lateral classifier. The same images are abnormal,
      but each draws every finding of :data:`CLASSIFICATION_FINDINGS` independently, with the probabilities of
      :data:`CLASSIFICATION_PROBABILITIES` (again while it has none), ``Cardiomegaly`` and ``Fracture`` included.
      The datalist gets the top-level ``label_names`` (:data:`CLASSIFICATION_FINDINGS`) and per entry ``labels``
      (1 or 0 per name: the findings drawn), ``lateral`` (``laterals/<image name>``: the lateral view,
      :class:`PhantomLateral`, in the image's format; a DICOM one in the radiograph's study) and ``study``
      (``study_00000``..., shared by the two views). All images, abnormal ones too, are split by patient
      (15 % validation, 15 % test, the rest training); the abnormal test images are in ``test_unhealthy``, the
      healthy ones in ``test``. The CSVs list the frontal images only. Without it every file is the same as
      before, byte for byte.
    - ``pneumothorax``: a pneumothorax set with masks (seed 004, SIIM-ACR). Each abnormal image (``abnormal_fraction``,
      default 0.5: balanced) has exactly one ``Pneumothorax`` (redrawn up to 4 times), ``label`` 1, ``findings``
      ``["Pneumothorax"]`` and its box; every entry has ``lesion_mask`` (``masks/lesions/<stem>.png``: exactly the
      pneumothorax region, blank for a normal image, so every batch has masks). All images are split by patient
      (15 % validation, 15 % test; the patients with a pneumothorax and the others apart, so that each split has
      both classes), the abnormal test images in ``test_unhealthy``. ``train-rle.csv`` holds one
      row per image in SIIM's layout (stem, ``rle_encode`` of the lesion mask or ``-1``), so that ``datalist siim``
      reads a set written with ``dicom_fraction=1`` (``--rle-size`` the phantoms' size). Not with
      ``classification``. Without it every file is the same as before, byte for byte.

    The same arguments give byte-identical files. See the module docstring for the layout.

    >>> summary = generate_phantoms("/tmp/phantom", num_images=8, size=256, seed=1)  # doctest: +SKIP
    >>> print(summary.format())  # doctest: +SKIP
    """
    _check_size(size)
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if pneumothorax and classification:
        raise ValueError("pneumothorax and classification are two kinds of set: choose one")
    if abnormal_fraction is None:
        abnormal_fraction = _PNEUMOTHORAX_ABNORMAL_FRACTION if pneumothorax else _ABNORMAL_FRACTION
    for name, value in (("abnormal_fraction", abnormal_fraction), ("dicom_fraction", dicom_fraction),
                        ("monochrome1_fraction", monochrome1_fraction)):
        _check_fraction(name, value)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _prepare_out_dir(out_dir, overwrite, bone_pairs, classification)

    plans = _plan_images(num_images, seed, abnormal_fraction, dicom_fraction, monochrome1_fraction, classification,
                         pneumothorax)
    data_entry, bbox_list, rle_rows = [NIH_DATA_ENTRY_HEADER], [NIH_BBOX_HEADER], [SIIM_RLE_HEADER]
    entries: dict[int, dict] = {}
    finding_counts: Counter[str] = Counter()
    for plan in plans:
        if plan.follow_up == 0:
            anatomy = _sample_patient(_rng(seed, 1, plan.patient))
        image_rng = _rng(seed, 2, plan.index)
        lateral_stream = (seed, 3, plan.index) if classification else None  # the lateral view's own generator
        radiograph = _render(anatomy, _sample_acquisition(image_rng, size), image_rng, plan.findings, bone_pairs,
                             lateral_stream and _rng(*lateral_stream))
        # nothing fitted: try once more with a small nodule (pneumothorax sets: a few more pneumothoraces)
        retry_findings, retries = ((PNEUMOTHORAX,), 4) if pneumothorax else (("Nodule",), 1)
        for _ in range(retries):
            if not plan.findings or radiograph.lesions:
                break
            radiograph = _render(anatomy, _sample_acquisition(image_rng, size), image_rng, retry_findings, bone_pairs,
                                 lateral_stream and _rng(*lateral_stream))
        entries[plan.index], entry_row, box_rows = _write_phantom(out_dir, plan, radiograph, anatomy, seed,
                                                                  classification, pneumothorax)
        if pneumothorax:
            rle_rows.append(f"{plan.stem},{rle_encode(radiograph.lesion_mask)}")
        data_entry.append(entry_row)
        bbox_list.extend(box_rows)
        finding_counts.update(radiograph.findings)

    document = _datalist_document(plans, entries, size, seed, bone_pairs, classification, pneumothorax)
    datalist, data_entry_csv, bbox_csv = (out_dir / "datalist.json", out_dir / "Data_Entry_2017.csv",
                                          out_dir / "BBox_List_2017.csv")
    datalist.write_text(_datalist_json(document), encoding="utf-8", newline="\n")
    data_entry_csv.write_text("\n".join(data_entry) + "\n", encoding="utf-8", newline="\n")
    bbox_csv.write_text("\n".join(bbox_list) + "\n", encoding="utf-8", newline="\n")
    if pneumothorax:
        (out_dir / "train-rle.csv").write_text("\n".join(rle_rows) + "\n", encoding="utf-8", newline="\n")
    dicoms = [plan for plan in plans if plan.dicom]
    return PhantomSummary(
        out_dir=out_dir, size=size, num_patients=plans[-1].patient,
        images=tuple(entries[plan.index]["image"] for plan in plans),
        num_abnormal=sum(entry["label"] for entry in entries.values()), num_dicom=len(dicoms),
        num_monochrome1=sum(plan.monochrome1 for plan in dicoms),
        finding_counts={name: finding_counts[name] for name in CLASSIFICATION_FINDINGS if finding_counts[name]},
        splits={key: len(document[key]) for key in _SPLIT_KEYS},
        datalist=datalist, data_entry_csv=data_entry_csv, bbox_csv=bbox_csv, bone_pairs=bone_pairs,
        classification=classification, pneumothorax=pneumothorax)


def _write_phantom(out_dir: Path, plan: _ImagePlan, radiograph: PhantomRadiograph, anatomy: _PatientAnatomy,
                   seed: int, classification: bool = False,
                   pneumothorax: bool = False) -> tuple[dict, str, list[str]]:
    """Write one image and its masks; returns its datalist entry, Data_Entry row and BBox_List rows.

    ``pneumothorax``: a normal image gets a blank lesion mask too."""
    image_path, lung_mask_path = f"images/{plan.image_name}", f"masks/lungs/{plan.stem}.png"
    if plan.dicom:
        _write_dicom(out_dir / image_path, radiograph.image, plan, anatomy, seed)
    else:
        _write_image_png(out_dir / image_path, radiograph.image)
    _write_mask_png(out_dir / lung_mask_path, radiograph.lung_mask)
    size = radiograph.image.shape[0]
    spacing = f"{FIELD_OF_VIEW_MM / size:.10g}"
    findings = radiograph.findings
    entry_row = ",".join([plan.image_name, "|".join(findings) or NO_FINDING, str(plan.follow_up), str(plan.patient),
                          str(_patient_age(anatomy, plan)), anatomy.sex, "PA", str(size), str(size), spacing, spacing])
    entry: dict = {"image": image_path, "lung_mask": lung_mask_path,
                   "lung_boxes": [list(box) for box in radiograph.lung_boxes], "label": int(bool(findings))}
    if classification:
        entry["labels"] = [int(name in findings) for name in CLASSIFICATION_FINDINGS]
    box_rows = []
    if findings:
        lesion_mask_path = f"masks/lesions/{plan.stem}.png"
        _write_mask_png(out_dir / lesion_mask_path, radiograph.lesion_mask)
        entry.update(findings=findings, boxes=[list(lesion.box) for lesion in radiograph.lesions],
                     box_labels=[lesion.finding for lesion in radiograph.lesions], lesion_mask=lesion_mask_path)
        for lesion in radiograph.lesions:
            x0, y0, x1, y1 = (float(v) for v in lesion.box)
            box_rows.append(f"{plan.image_name},{lesion.finding},{x0!r},{y0!r},{x1 - x0!r},{y1 - y0!r}")
    elif pneumothorax:
        entry["lesion_mask"] = f"masks/lesions/{plan.stem}.png"
        _write_mask_png(out_dir / entry["lesion_mask"], radiograph.lesion_mask)  # blank
    entry["view"] = "PA"
    if radiograph.rib_mask is not None:  # the bone pair, when rendered
        for key, picture in (("bone_suppressed", radiograph.soft_tissue), ("bone", radiograph.bone)):
            entry[key] = f"{_BONE_PAIR_DIRS[key]}/{plan.image_name}"
            if plan.dicom:
                _write_dicom(out_dir / entry[key], picture, plan, anatomy, seed, derived=key)
            else:
                _write_image_png(out_dir / entry[key], picture)
        entry["rib_mask"] = f"{_BONE_PAIR_DIRS['rib_mask']}/{plan.stem}.png"
        _write_mask_png(out_dir / entry["rib_mask"], radiograph.rib_mask)
    if radiograph.lateral is not None:
        entry["lateral"] = f"{_LATERAL_DIR}/{plan.image_name}"
        if plan.dicom:
            _write_dicom(out_dir / entry["lateral"], radiograph.lateral.image, plan, anatomy, seed, lateral=True)
        else:
            _write_image_png(out_dir / entry["lateral"], radiograph.lateral.image)
        entry["study"] = f"study_{plan.index:05d}"
    return entry, entry_row, box_rows


def _datalist_document(plans: Sequence[_ImagePlan], entries: dict[int, dict], size: int, seed: int,
                       bone_pairs: bool = False, classification: bool = False, pneumothorax: bool = False) -> dict:
    abnormal_patients = {plan.patient for plan in plans if entries[plan.index]["label"]}
    split_all = classification or pneumothorax
    if split_all:  # every image, split by patient
        split_by_patient = Counter(plan.patient for plan in plans)
    else:  # the healthy images; patients with an abnormal image are in test
        split_by_patient = Counter(plan.patient for plan in plans if not entries[plan.index]["label"])
    # pneumothorax sets split the patients with an abnormal image and the others apart: both classes in each split
    strata = ([abnormal_patients, set(split_by_patient) - abnormal_patients] if pneumothorax else
              [set(split_by_patient)])
    by_name: dict[str, str] = {}
    for stratum in strata:
        by_name.update(split_groups(
            {str(patient): count for patient, count in split_by_patient.items() if patient in stratum},
            val_fraction=_SPLIT_FRACTIONS["validation"],
            test_fraction=_SPLIT_FRACTIONS["test"],
            seed=seed,
            test_groups=() if split_all else [str(patient) for patient in abnormal_patients],
        ))
    split_of = {int(patient): key for patient, key in by_name.items()}
    if classification:
        splits = ("training/validation/test: all images split by synthetic patient, the abnormal test images in "
                  "test_unhealthy; labels: multi-hot, one value per name of label_names (1 drawn, 0 not); "
                  "lateral: the lateral view of the same study; study: pairs the two views; boxes "
                  "[x_min, y_min, x_max, y_max] in pixels.")
    elif pneumothorax:
        splits = ("training/validation/test: all images split by synthetic patient (those with a pneumothorax and "
                  "the others apart), the abnormal test images in test_unhealthy; label 1: one pneumothorax "
                  "(findings Pneumothorax, its box [x_min, y_min, x_max, y_max] in pixels); lesion_mask: exactly the "
                  "pneumothorax region, blank for label 0; train-rle.csv: the same masks in SIIM-ACR's run-length "
                  "layout.")
    else:
        splits = ("training/validation/test: healthy images split by synthetic patient (patients with an abnormal "
                  "image are all in test); test_unhealthy: images with lesions, boxes [x_min, y_min, x_max, y_max] "
                  "in pixels.")
    document: dict = {
        "name": f"cxr-monai-phantom-seed{seed}",
        "description": (
            f"{len(plans)} synthetic chest radiographs ({size} px, seed {seed}) written by "
            f"cxr_monai.data.phantom. {splits} Paths are relative to this file's directory."
            + (" bone_suppressed: the image without ribs and clavicles (spine kept); bone: the image minus "
               "bone_suppressed (ribs and clavicles, bright); rib_mask: lung pixels on a rib or clavicle."
               if bone_pairs else "")),
        **({"label_names": list(CLASSIFICATION_FINDINGS)} if classification else {}),
        **{key: [] for key in _SPLIT_KEYS}}
    for plan in plans:
        entry = entries[plan.index]
        split = split_of.get(plan.patient, "test")  # in the default set, abnormal-only patients are not split
        document["test_unhealthy" if entry["label"] and split == "test" else split].append(entry)
    return document


# ------------------------------------------------------------------------------------------------------------
# command line


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m cxr_monai phantom``."""
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--num-images", type=_positive_int(1), default=20, help="number of images (default 20)")
    parser.add_argument("--size", type=_positive_int(MIN_SIZE), default=1024, help="image side in px (default 1024)")
    parser.add_argument("--seed", type=_positive_int(0), default=0, help="random seed (default 0)")
    parser.add_argument("--abnormal-fraction", type=_fraction, default=None,
                        help="share of images with lesions (default 0.3; 0.5 with --pneumothorax)")
    parser.add_argument("--dicom-fraction", type=_fraction, default=0.25,
                        help="share of images written as DICOM instead of 16-bit PNG (default 0.25)")
    parser.add_argument("--monochrome1-fraction", type=_fraction, default=0.5,
                        help="share of the DICOM images stored MONOCHROME1 (default 0.5)")
    parser.add_argument("--overwrite", action="store_true", help="replace the phantom files of an earlier run")
    parser.add_argument("--bone-pairs", action="store_true",
                        help="also write each image without ribs and clavicles (bone_suppressed/), the bone image "
                             "(bones/) and the rib mask (rib_masks/), for bone suppression")
    parser.add_argument("--classification", action="store_true",
                        help="a multi-label set for classification: findings drawn independently, Cardiomegaly and "
                             "Fracture included; multi-hot labels with label_names in the datalist, a lateral view "
                             "of each image (laterals/) with a shared study id; all images split by patient")
    parser.add_argument("--pneumothorax", action="store_true",
                        help="a pneumothorax set (seed 004): abnormal images (half by default) have one pneumothorax "
                             "only, every image a lesion mask (blank when normal), train-rle.csv in SIIM's layout; "
                             "all images split by patient")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m cxr_monai phantom``; prints a summary, returns the exit status."""
    started = time.perf_counter()
    try:
        summary = generate_phantoms(args.out, args.num_images, args.size, args.seed, args.abnormal_fraction,
                                    args.dicom_fraction, args.monochrome1_fraction, overwrite=args.overwrite,
                                    bone_pairs=getattr(args, "bone_pairs", False),
                                    classification=getattr(args, "classification", False),
                                    pneumothorax=getattr(args, "pneumothorax", False))
    except (FileExistsError, ValueError) as error:
        print(f"phantom: error: {error}", file=sys.stderr)
        return 2
    print(f"{summary.format()} ({time.perf_counter() - started:.1f} s)")
    return 0
