"""Units of the validation gate that need no dataset: suites in sync, RLE features, data hash, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steelqc.data.errors import DatasetError, RLEError
from steelqc.data.rle import encode_rle, parse_runs
from steelqc.validation import (
    RLE_FEATURES,
    SUITES_DIR,
    build_suites,
    compute_data_hash,
    label_table,
    load_manifest,
    rle_features,
    suites_json,
)

HEIGHT, WIDTH = 8, 5  # tiny images make every kind of bad run likely under hypothesis


def test_checked_in_suites_match_the_code() -> None:
    expected = suites_json()
    on_disk = {p.name: p.read_text() for p in SUITES_DIR.glob("*.json")}
    assert on_disk == expected, "expectations/ is stale: run `steelqc validate --write-suites`"


def test_checked_in_suites_load_back_into_gx() -> None:
    for suite in build_suites():
        stored = json.loads((SUITES_DIR / f"{suite.name}.json").read_text())
        loaded = gx.ExpectationSuite(**stored)
        assert loaded.to_json_dict() == suite.to_json_dict()
        assert all(e.description for e in loaded.expectations), "every expectation explains itself"


def _bounds() -> dict[str, tuple[float | None, float | None]]:
    """min/max of the labels suite's RLE expectations, read from the suite (parameters filled in)."""
    labels = next(s for s in build_suites() if s.name == "labels")
    bounds = {}
    for expectation in labels.expectations:
        column = getattr(expectation, "column", None)
        if column in RLE_FEATURES[1:]:
            low, high = expectation.min_value, expectation.max_value
            high = HEIGHT * WIDTH if isinstance(high, dict) else high  # the $PARAMETER n_pixels
            bounds[column] = (low, high)
    return bounds


BOUNDS = _bounds()


def _passes_suite(features: tuple) -> bool:
    values = dict(zip(RLE_FEATURES, features, strict=True))
    if values["rle_pairs"] is not True:
        return False
    for column, (low, high) in BOUNDS.items():
        value = values[column]
        if value is None:
            continue  # GX skips missing values
        if (low is not None and value < low) or (high is not None and value > high):
            return False
    return True


tokens = st.one_of(
    st.integers(-3, HEIGHT * WIDTH + 3).map(str),
    st.sampled_from(
        ["x", "1.5", "+3", "1_0", "", "99999999999999999999999", "9223372036854775807", "1\u00a02", "1\x1c2", "٣"]
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(tokens, max_size=8).map(" ".join))
def test_rle_feature_bounds_accept_exactly_what_parse_runs_accepts(encoded: str) -> None:
    try:
        starts, _ = parse_runs(encoded, HEIGHT, WIDTH)
        accepted = len(starts) > 0  # an empty mask row is a label without a defect: rejected too
    except RLEError:
        accepted = False
    assert _passes_suite(rle_features(encoded)) == accepted


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=HEIGHT * WIDTH, max_size=HEIGHT * WIDTH))
def test_encoded_masks_have_valid_features(bits: list[bool]) -> None:
    mask = np.array(bits).reshape(HEIGHT, WIDTH)
    features = rle_features(encode_rle(mask))
    assert _passes_suite(features) == bool(mask.any())


@pytest.mark.parametrize(
    ("encoded", "column", "value"),
    [
        ("1 3 5", "rle_pairs", False),
        ("1 a", "rle_pairs", False),
        ("", "rle_pairs", False),
        ("0 4", "rle_first_start", 0),
        ("3 0", "rle_min_length", 0),
        ("38 4", "rle_last_pixel", 41),
        ("20 2 5 2", "rle_min_step", -15),
        ("5 4 8 2", "rle_min_gap", -1),
        ("9223372036854775807 9223372036854775807", "rle_pairs", False),  # no int64 wrap-around to a "valid" end
        ("1\u00a03", "rle_pairs", False),  # non-ASCII separator: decoding rejects it too
    ],
)
def test_rle_features_name_each_malformation(encoded: str, column: str, value: object) -> None:
    assert dict(zip(RLE_FEATURES, rle_features(encoded), strict=True))[column] == value


def test_label_table_keeps_rows_and_adds_features() -> None:
    labels = pd.DataFrame(
        {"ImageId": ["a.jpg", "b.jpg"], "ClassId": ["1", "2"], "EncodedPixels": ["1 2 5 1", "x"], "row": [2, 3]}
    )
    table = label_table(labels)
    assert table["row"].tolist() == [2, 3]
    assert table["rle_pairs"].tolist() == [True, False]
    assert table.loc[0, "rle_min_gap"] == 2 and np.isnan(table.loc[1, "rle_last_pixel"])


def test_data_hash_is_order_independent_and_sensitive_to_every_change() -> None:
    labels = pd.DataFrame({"ImageId": ["a.jpg", "b.jpg"], "ClassId": ["1", "3"], "EncodedPixels": ["1 2", "4 4"]})
    images = {"a.jpg": "aa", "b.jpg": "bb", "c.jpg": "cc"}
    base = compute_data_hash(labels, images)
    assert compute_data_hash(labels.iloc[::-1], dict(reversed(list(images.items())))) == base
    changed_label = labels.assign(EncodedPixels=["1 2", "4 5"])
    assert compute_data_hash(changed_label, images) != base
    assert compute_data_hash(labels, {**images, "c.jpg": "cd"}) != base
    assert compute_data_hash(labels, {"a.jpg": "aa", "b.jpg": "bb"}) != base


def test_load_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"root": "/d", "image_ids": ["a.jpg"], "label_rows": [2], "data_hash": "h"}))
    assert load_manifest(path) == ("/d", ["a.jpg"], [2], "h")
    with pytest.raises(DatasetError, match="no clean manifest"):
        load_manifest(tmp_path / "absent.json")
    path.write_text('{"root": "/d"}')
    with pytest.raises(DatasetError, match="invalid manifest") as info:
        load_manifest(path)
    assert info.value.file == str(path)
