"""RLE: Kaggle's column-major, 1-indexed convention, round trips, and every malformed kind raising RLEError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from steelqc.data.errors import RLEError
from steelqc.data.rle import decode_rle, encode_rle, parse_runs, rle_area


def test_kaggle_example_marks_rows_of_first_column() -> None:
    mask = decode_rle("1 3 10 5", 256, 1600)
    assert mask.shape == (256, 1600)
    assert mask.sum() == 8
    assert np.flatnonzero(mask[:, 0]).tolist() == [0, 1, 2, 9, 10, 11, 12, 13]
    assert not mask[:, 1:].any()
    assert encode_rle(mask) == "1 3 10 5"


def test_runs_continue_into_the_next_column() -> None:
    mask = decode_rle("255 4", 256, 1600)  # pixels 254..257 (0-based): bottom of column 0, top of column 1
    assert sorted(map(tuple, np.argwhere(mask).tolist())) == [(0, 1), (1, 1), (254, 0), (255, 0)]


def test_empty_values_are_empty_masks() -> None:
    for empty in ("", "   ", None, float("nan")):
        assert not decode_rle(empty, 4, 5).any()
    assert encode_rle(np.zeros((4, 5), bool)) == ""


def test_area_without_decoding() -> None:
    assert rle_area("1 3 10 5", 256, 1600) == 8


@settings(max_examples=200, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_round_trip_any_mask(mask: np.ndarray) -> None:
    encoded = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(encoded, *mask.shape), mask)
    assert rle_area(encoded, *mask.shape) == int(mask.sum())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30)), max_size=40))
def test_round_trip_valid_strings(gaps_and_lengths: list[tuple[int, int]]) -> None:
    """Any sorted, disjoint, non-adjacent run list survives decode → encode unchanged."""
    height, width = 37, 50
    pairs, position = [], 0
    for gap, length in gaps_and_lengths:
        start = position + gap + (1 if pairs else 0)  # adjacent runs would merge when re-encoded
        if start + length > height * width:
            break
        pairs += [start + 1, length]
        position = start + length
    encoded = " ".join(map(str, pairs))
    assert encode_rle(decode_rle(encoded, height, width)) == encoded


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("1 3 10", "odd number"),
        ("1 3 a 5", "non-integer"),
        ("1 3 1.5 5", "non-integer"),
        ("1 3 +10 5", "non-integer"),
        ("1 3 1_0 5", "non-integer"),
        ("1 0", "length 0"),
        ("1 -2", "length -2"),
        ("0 3", "1-indexed"),
        ("-4 3", "1-indexed"),
        ("409599 3", "past the image"),
        ("99999999999999999999 1", "too large"),
        ("9223372036854775807 9223372036854775807", "too large"),  # start + length would wrap around int64
        ("1 3 10\u00a05", "non-ASCII"),  # a no-break space: str.split() takes it, decoding must not
        ("1 10 5 3", "overlaps"),
        ("10 3 1 3", "not sorted"),
        ("5 1 5 1", "not sorted"),
    ],
)
def test_malformed_rle_raises_with_file_and_row(encoded: str, reason: str) -> None:
    with pytest.raises(RLEError, match=reason) as info:
        decode_rle(encoded, 256, 1600, file="train.csv", row=7)
    assert info.value.file == "train.csv"
    assert info.value.row == 7
    assert "row 7" in str(info.value)


def test_run_ending_exactly_at_the_last_pixel_is_valid() -> None:
    starts, lengths = parse_runs("409598 3", 256, 1600)
    assert starts.tolist() == [409597] and lengths.tolist() == [3]
    assert decode_rle("409598 3", 256, 1600)[-3:, -1].all()


def test_non_string_value_raises() -> None:
    with pytest.raises(RLEError, match="must be a string"):
        decode_rle(12, 4, 4)  # type: ignore[arg-type]
