"""The app's pure helpers: upload checks, heatmap, patch table, QA confusion counts, demo images, the CLI command."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelqc.app.images import (
    DECISION_COLORS,
    UploadTooLargeError,
    demo_images,
    heatmap_figure,
    patch_bars_figure,
    patch_heatmap,
    patch_table,
    read_strip,
)
from steelqc.app.make_demo_images import DEMO_DIR, DEMO_STRIPS, write_demo_images
from steelqc.app.qa_page import confusion_on_split, metrics_comparison
from steelqc.cli.app_commands import APP_SCRIPT, streamlit_command
from steelqc.config import ConfigError, load_settings
from steelqc.data.errors import ImageDecodeError, ImageSizeError
from steelqc.data.images import encode_jpeg, encode_png, read_image
from steelqc.thresholds import Thresholds


def strip(height: int = 256, width: int = 1600) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)


@pytest.mark.parametrize("encode", [encode_png, encode_jpeg])
def test_read_strip_decodes_png_and_jpeg_by_content(encode) -> None:  # type: ignore[no-untyped-def]
    pixels = read_strip(encode(strip()), name="strip.bin", max_mb=20, min_height=256, min_width=256)
    assert pixels.shape == (256, 1600) and pixels.dtype == np.uint8


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"GIF89a" + bytes(32), ImageDecodeError, "its content is not an image format we know"),
        (b"BM" + bytes(32), ImageDecodeError, "its content is BMP"),
        (encode_png(strip())[:-20], ImageDecodeError, "truncated PNG"),
        (encode_png(strip(100, 1600)), ImageSizeError, "image is 100x1600, too small"),
        (encode_png(strip(256, 200)), ImageSizeError, "image is 256x200, too small"),
    ],
)
def test_read_strip_rejects_with_a_message_naming_the_file(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        read_strip(data, name="upload.png", max_mb=20, min_height=256, min_width=256)
    assert caught.value.file == "upload.png"


def test_read_strip_enforces_the_size_limit_before_decoding() -> None:
    with pytest.raises(UploadTooLargeError, match="file is 1.5 MB, the limit is 1 MB"):
        read_strip(b"\x89PNG\r\n\x1a\n" + bytes(int(1.5 * 2**20)), name="big.png", max_mb=1, min_height=1, min_width=1)


def test_heatmap_takes_the_highest_score_of_overlapping_patches_and_clips_at_the_edges() -> None:
    heat = patch_heatmap((4, 10), [(0, 0), (0, 4), (0, 8)], [0.2, 0.9, 0.5], patch_size=6)
    assert heat.dtype == np.float32 and heat.shape == (4, 10)
    assert heat[0, 0] == pytest.approx(0.2)
    assert heat[0, 5] == pytest.approx(0.9)  # covered by the first two patches: the higher wins
    assert heat[0, 9] == pytest.approx(0.9)  # third patch runs past the edge (padding), clipped


BAND = Thresholds(0.3, 0.7, 1.0, 1.0, 0.9, 0.5, 10, 10, True, "")


def _colourful(rgb: np.ndarray) -> float:
    """Share of pixels far from grey."""
    return float((np.ptp(rgb.astype(int), axis=2) > 60).mean())


def test_heatmap_keeps_clean_steel_as_it_is_and_colours_only_what_the_model_flags() -> None:
    pixels = strip()
    positions = [(0, x) for x in range(0, 1600 - 255, 256)]
    quiet = heatmap_figure(pixels, patch_heatmap(pixels.shape, positions, [0.0] * 6, 256), (0, 0), 256, BAND, "PASS")
    scores = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    hot = heatmap_figure(pixels, patch_heatmap(pixels.shape, positions, scores, 256), (0, 256), 256, BAND, "FAIL")
    assert quiet.dtype == np.uint8 and quiet.shape == hot.shape and quiet.shape[2] == 3
    assert _colourful(quiet) < 0.06  # the colour bar and a frame; the strip itself stays grey
    assert _colourful(hot) > _colourful(quiet) + 0.06  # one hot patch of six is coloured
    assert (hot != quiet).any(axis=2).mean() < 0.3  # the rest of the strip is untouched


def test_patch_bars_take_the_colour_of_each_patch_decision() -> None:
    def count(rgb: np.ndarray, decision: str) -> int:
        colour = [int(DECISION_COLORS[decision][i : i + 2], 16) for i in (1, 3, 5)]
        return int((rgb == colour).all(axis=2).sum())

    bars = patch_bars_figure([0.1, 0.5, 0.9], ["PASS", "HOLD", "FAIL"], BAND)
    assert min(count(bars, d) for d in ("PASS", "HOLD", "FAIL")) > 100
    only_pass = patch_bars_figure([0.1, 0.2], ["PASS", "PASS"], BAND)
    assert count(only_pass, "FAIL") == 0 and count(only_pass, "PASS") > 100


def test_patch_table_rows_follow_the_grid() -> None:
    table = patch_table([(0, 0), (0, 128)], np.array([0.1, 0.8]), np.array(["PASS", "FAIL"]))
    assert table.to_dict("list") == {
        "patch": [0, 1],
        "y": [0, 0],
        "x": [0, 128],
        "score": [0.1, 0.8],
        "decision": ["PASS", "FAIL"],
    }


def test_demo_images_are_packaged_strips_plus_present_samples(tmp_path: Path) -> None:
    assert sorted(p.stem for p in DEMO_DIR.glob("*.png")) == sorted(DEMO_STRIPS)
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "0002cc93b.jpg").write_bytes(b"x")
    choices = demo_images(DEMO_DIR, samples)
    assert list(choices)[:4] == [f"demo: {name}" for name in sorted(p.name for p in DEMO_DIR.glob("*.png"))]
    assert choices["severstal-sample: 0002cc93b.jpg"] == samples / "0002cc93b.jpg"
    assert "severstal-sample" not in " ".join(demo_images(DEMO_DIR, tmp_path / "absent"))


def test_make_demo_images_is_deterministic_and_writes_strips(tmp_path: Path) -> None:
    first = write_demo_images(tmp_path / "a")
    second = write_demo_images(tmp_path / "b")
    assert [p.name for p in first] == [f"{name}.png" for name in DEMO_STRIPS]
    for one, two in zip(first, second, strict=True):
        assert one.read_bytes() == two.read_bytes()
        assert read_image(one).shape == read_image(DEMO_DIR / one.name).shape == (256, 1600)


def test_confusion_counts_follow_from_rates_on_the_shared_split() -> None:
    split = {"patch_n": 150.0, "patch_n_defective": 50.0}
    matrix = confusion_on_split({"patch_recall": 0.96, "patch_specificity": 0.8}, split, "patch")
    assert matrix is not None
    assert matrix.loc["defective"].tolist() == [48, 2] and matrix.loc["clean"].tolist() == [20, 80]
    assert int(matrix.to_numpy().sum()) == 150
    assert confusion_on_split({"patch_recall": 0.96}, split, "patch") is None
    assert confusion_on_split({"image_recall": 1.0, "image_specificity": 1.0}, split, "image") is None


def test_metrics_comparison_puts_gated_metrics_first_with_differences() -> None:
    table = metrics_comparison({"patch_precision": 0.6, "zeta": 1.0, "patch_recall": 0.98}, {"patch_recall": 0.96})
    assert table["metric"].tolist() == ["patch_recall", "patch_precision", "zeta"]
    assert table.loc[0, "difference"] == pytest.approx(0.02)
    assert pd.isna(table.loc[1, "champion"]) and pd.isna(table.loc[1, "difference"])
    assert metrics_comparison({"patch_recall": 0.9}, None)["champion"].isna().all()


def test_app_command_is_headless_on_localhost_and_forwards_settings() -> None:
    settings = load_settings(overrides={"app.port": 8601, "app.max_upload_mb": 5})
    command = streamlit_command(settings, "demo", ["tracking.registered_model=x"])
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT)]
    options = dict(zip(command[5:-5:2], command[6:-5:2], strict=True))
    assert options == {
        "--server.headless": "true",
        "--server.address": "127.0.0.1",
        "--server.port": "8601",
        "--server.maxUploadSize": "5",
        "--browser.gatherUsageStats": "false",
        "--client.toolbarMode": "viewer",
    }
    assert command[-5:] == ["--", "--config", "demo", "--set", "tracking.registered_model=x"]


def test_app_script_reads_its_own_arguments_only() -> None:
    main = runpy.run_path(str(APP_SCRIPT), run_name="steelqc_app_main")  # defines, does not run, the app
    settings_from_argv = main["settings_from_argv"]
    assert settings_from_argv(["pytest", "-c", "whatever"]).profile == "default"
    settings = settings_from_argv([str(APP_SCRIPT), "--config", "demo", "--set", "app.max_upload_mb=3"])
    assert settings.profile == "demo" and settings.app.max_upload_mb == 3
    with pytest.raises(ConfigError, match="key=value"):
        settings_from_argv([str(APP_SCRIPT), "--set", "novalue"])
