"""SIIM-ACR run-length codes (cxr_monai.io.rle): relative offsets, column-major pixels, -1, merged regions."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy import ndimage

from cxr_monai.io import RLEError, merge_rle, read_rle_csv, rle_decode, rle_encode

SIIM_CSV = ("metadata", "siim-pneumothorax-train-rle.csv.gz")


def test_column_major_relative_offsets_by_hand():
    # 3 rows x 2 columns; column-major pixel numbers: [[0, 3], [1, 4], [2, 5]]
    mask = rle_decode("1 1 2 2", shape=(3, 2))  # pixel 1; then 2 skipped after its end (2): pixels 4-5
    assert mask.tolist() == [[False, False], [True, True], [False, True]]
    assert mask.dtype == bool and mask.flags.c_contiguous
    assert rle_encode(mask) == "1 1 2 2"
    assert rle_decode("0 6", shape=(3, 2)).all() and rle_encode(np.ones((3, 2))) == "0 6"


@pytest.mark.parametrize("text", ["-1", " -1 ", "", "   ", None])
def test_no_pneumothorax_decodes_to_an_empty_mask(text):
    mask = rle_decode(text, shape=(8, 5))
    assert mask.shape == (8, 5) and not mask.any()


def test_empty_mask_encodes_as_minus_one():
    assert rle_encode(np.zeros((1024, 1024), bool)) == "-1"
    assert rle_encode(np.zeros((3, 4), np.uint8)) == "-1"


@pytest.mark.parametrize("seed", range(5))
def test_random_masks_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 70)), int(rng.integers(1, 70)))
    mask = rng.random(shape) < rng.uniform(0.05, 0.95)
    text = rle_encode(mask)
    assert np.array_equal(rle_decode(text, shape), mask)
    values = [int(v) for v in text.split()] if text != "-1" else []
    assert all(v >= 0 for v in values) and all(v > 0 for v in values[1::2])
    assert all(v > 0 for v in values[2::2])  # runs are maximal: never 0 pixels between two runs


def test_blob_round_trip_at_siim_size_and_non_binary_values():
    yy, xx = np.mgrid[:1024, :1024]
    blob = (yy - 200) ** 2 / 80**2 + (xx - 150) ** 2 / 40**2 < 1
    assert np.array_equal(rle_decode(rle_encode(blob)), blob)
    assert rle_encode(blob.astype(np.uint8) * 255) == rle_encode(blob)  # non-zero is foreground


@pytest.mark.parametrize("pixels", [[(0, 0)], [(9, 6)], [(0, 6)], [(9, 0)], [(0, 0), (9, 6)],
                                    [(9, 2), (0, 3)]])
def test_edge_pixels_round_trip(pixels):
    mask = np.zeros((10, 7), bool)
    for y, x in pixels:
        mask[y, x] = True
    assert np.array_equal(rle_decode(rle_encode(mask), (10, 7)), mask)
    if pixels == [(9, 2), (0, 3)]:  # the bottom of one column and the top of the next: one run
        assert rle_encode(mask) == "29 2"


def test_several_regions_merge():
    first, second = np.zeros((20, 30), bool), np.zeros((20, 30), bool)
    first[2:6, 3:9] = True
    second[4:15, 7:12] = True
    merged = merge_rle([rle_encode(first), rle_encode(second), "-1"], shape=(20, 30))
    assert np.array_equal(merged, first | second)
    assert not merge_rle([], shape=(20, 30)).any()
    assert not merge_rle(["-1"], shape=(20, 30)).any()


@pytest.mark.parametrize("text, reason", [
    ("5 2 3", "odd number of values (3)"),
    ("5 -2", "negative length -2"),
    ("-3 2", "negative start -3"),
    ("5 2 x 1", "not an integer"),
    ("90 5 2 10", "run 2 ends at pixel 107, past the end of the image (100 pixels)"),
    ("100 1", "past the end"),
])
def test_bad_codes_name_the_source_and_the_reason(text, reason):
    with pytest.raises(RLEError, match="^1.2.3.4: ") as raised:
        rle_decode(text, shape=(10, 10), source="1.2.3.4")
    assert reason in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_merge_names_the_region():
    with pytest.raises(RLEError, match=r"img7 \(region 2\): odd number"):
        merge_rle(["0 1", "1 1 1"], shape=(4, 4), source="img7")


def test_encode_needs_a_2d_mask():
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((1, 4, 4)))


def test_read_rle_csv_with_siims_leading_space_plain_and_gzip(tmp_path):
    text = ("ImageId, EncodedPixels\n1.2.3,-1\n1.2.4, 5 2 3 1\n1.2.4, 40 3\n\n1.2.5,\n")
    plain, packed = tmp_path / "train-rle.csv", tmp_path / "train-rle.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        assert read_rle_csv(path) == {"1.2.3": ["-1"], "1.2.4": ["5 2 3 1", "40 3"], "1.2.5": [""]}
    (tmp_path / "no-space.csv").write_text("ImageId,EncodedPixels\na,-1\n")
    assert read_rle_csv(tmp_path / "no-space.csv") == {"a": ["-1"]}
    (tmp_path / "other.csv").write_text("image,mask\na,-1\n")
    with pytest.raises(ValueError, match="other.csv: no 'ImageId' column"):
        read_rle_csv(tmp_path / "other.csv")


def test_real_siim_rows_decode_to_plausible_masks(shared_path):
    codes = read_rle_csv(shared_path(*SIIM_CSV))
    assert len(codes) > 10_000
    negatives = [image_id for image_id, texts in codes.items() if texts == ["-1"]]
    positives = [image_id for image_id, texts in codes.items() if "-1" not in texts]
    assert len(negatives) + len(positives) == len(codes)  # never -1 and a region for one image
    several = [image_id for image_id in positives if len(codes[image_id]) > 1]
    assert several, "SIIM has images with several regions"
    rng = np.random.default_rng(0)
    sample = [positives[i] for i in rng.choice(len(positives), 60, replace=False)] + several[:20]
    centres, largest_shares = [], []
    for image_id in sample:
        texts = codes[image_id]
        mask = merge_rle(texts, source=image_id)
        assert mask.shape == (1024, 1024) and 0 < mask.mean() < 0.25, image_id
        for text in texts:
            region = rle_decode(text, source=image_id)
            labels, count = ndimage.label(region)
            assert count <= 25, image_id  # misread offsets scatter the runs into hundreds of parts
            largest_shares.append(np.bincount(labels.ravel())[1:].max() / region.sum())
            if len(texts) == 1:
                assert rle_encode(region) == text  # SIIM's own codes come back unchanged
        ys, xs = np.nonzero(mask)
        centres.append((ys.mean(), xs.mean()))
        # a pneumothorax lies in the lungs, not on the image border
        assert 0 < xs.min() and xs.max() < 1023 and 0 < ys.min(), image_id
    # each region is a blob: its largest connected part holds nearly all of it (all of SIIM: 99.8 % over half)
    assert np.median(largest_shares) > 0.95 and np.mean(np.array(largest_shares) > 0.5) > 0.9
    centres = np.array(centres)
    # column-major and not transposed: pneumothoraces sit in the upper chest, in either lung (left and right of the
    # midline), rarely in the lower quarter
    assert np.mean(centres[:, 0] < 600) > 0.7
    assert np.mean(centres[:, 0] > 768) < 0.1
    assert np.mean(centres[:, 1] < 512) > 0.2 and np.mean(centres[:, 1] > 512) > 0.2
