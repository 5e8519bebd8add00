"""The detector's datalist: the boxed entries of one split, plus the ``training`` entries of extra datalists (seed
002's Ori + Pix2Pix protocols: the synthetic images a generator wrote)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cxr_monai.data import load_datalist
from cxr_monai.data.datalist import DatalistError

__all__ = ["detection_datalist"]

logger = logging.getLogger(__name__)


def detection_datalist(
    datalist: str | os.PathLike,
    key: str | Sequence[str],
    base_dir: str | os.PathLike | None = None,
    extra_datalists: Sequence[str | os.PathLike] | str | None = (),
    extra_key: str = "training",
    min_entries: int = 0,
) -> list[dict]:
    """The entries with ``boxes`` of ``datalist``'s ``key`` list(s) (paths joined with ``base_dir``), followed by the
    entries with ``boxes`` of the ``extra_key`` list of each of ``extra_datalists``.

    An extra datalist's relative image paths are relative to *its own* folder, absolute ones stay as they are
    (``load_datalist`` with no ``base_dir``), so a generator's datalist can sit beside its images anywhere; its
    entries keep their other keys (``source``, ``synthetic``). Entries without ``boxes`` are left out with a
    warning (``load_datalist``'s ``required_keys``). ``extra_datalists`` may be one path, a list, or empty / None.
    Raises :class:`~cxr_monai.data.DatalistError` naming the file when fewer than ``min_entries`` remain, and for
    an extra datalist that is missing or lacks the ``extra_key`` list.

    >>> detection_datalist("nih_boxes.json", "training", "/data/nih/images",  # doctest: +SKIP
    ...                    extra_datalists=["runs/pix2pix/synthetic/datalist.json"])
    """
    entries = load_datalist(datalist, key, base_dir=base_dir, required_keys=["boxes"])
    if isinstance(extra_datalists, (str, os.PathLike)):
        extra_datalists = [extra_datalists]
    for extra in extra_datalists or ():
        path = Path(extra)
        if not path.is_file():
            raise DatalistError(f"{path}: extra datalist not found")
        added = load_datalist(path, extra_key, required_keys=["boxes"])
        logger.info("%s: %d '%s' entries with boxes added to the %d of %s", path, len(added), extra_key,
                    len(entries), datalist)
        entries += added
    if len(entries) < min_entries:
        names = ", ".join([str(datalist), *map(str, extra_datalists or ())])
        raise DatalistError(f"{names}: {len(entries)} entries with boxes; this run needs at least {min_entries}")
    return entries
