"""Inspector behaviour with a tiny transparent Keras model: score = brightest pixel of the patch / 255."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from steelqc.data.errors import ImageDecodeError
from steelqc.data.images import encode_jpeg, encode_png
from steelqc.inference import Inspector, decode_inputs
from steelqc.thresholds import Thresholds

from hostile_files import bit_depth_and_channel_copies, deflate_bomb_png, jpeg_with_corrupt_entropy, png_header_claiming

PATCH, STRIDE = 32, 16


def brightest_pixel_model(size: int = PATCH) -> keras.Model:
    inputs = keras.Input((size, size, 1))
    x = keras.layers.GlobalMaxPooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Rescaling(1.0 / 255.0)(x))


def thresholds(t_pass: float = 0.5, t_fail: float = 0.9) -> Thresholds:
    return Thresholds(t_pass, t_fail, 1.0, 1.0, 1.0, 0.5, 10, 10, True, "crafted for tests")


class CountingModel:
    """The real Keras model, counting how often it is called."""

    def __init__(self, model: keras.Model) -> None:
        self.model, self.calls, self.batch_sizes = model, 0, []

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.batch_sizes.append(len(x))
        return self.model.predict_on_batch(x)


def strip(value: int | None = None, at: tuple[int, int] = (40, 100), shape: tuple[int, int] = (64, 160)) -> np.ndarray:
    image = np.full(shape, 20, np.uint8)
    if value is not None:
        image[at] = value
    return image


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return brightest_pixel_model()


def test_decisions_follow_the_worst_patch(model: keras.Model) -> None:
    inspector = Inspector(model, thresholds(), PATCH, STRIDE, "reflect")
    clean, doubtful, defect = inspector.inspect([strip(), strip(160), strip(250)])
    assert clean.decision == "PASS" and clean.worst_score == pytest.approx(20 / 255, abs=1e-6)
    assert doubtful.decision == "HOLD" and doubtful.worst_score == pytest.approx(160 / 255, abs=1e-6)
    assert defect.decision == "FAIL"
    y, x = defect.worst_patch
    assert y <= 40 < y + PATCH and x <= 100 < x + PATCH
    # every patch that covers the bright pixel fails, every other one passes
    covers = np.array([py <= 40 < py + PATCH and px <= 100 < px + PATCH for py, px in defect.positions])
    assert list(defect.patch_decisions[covers]) == ["FAIL"] * int(covers.sum())
    assert set(defect.patch_decisions[~covers]) == {"PASS"}
    assert len(defect.patch_scores) == len(defect.positions) == 3 * 9


def test_patches_of_many_images_share_model_batches(model: keras.Model) -> None:
    counting = CountingModel(model)
    images = [strip(v) for v in (None, 100, 200, 250, 30)]  # 27 patches each, 135 in all
    batched = Inspector(counting, thresholds(), PATCH, STRIDE, "reflect", batch_size=64).inspect(images)
    assert counting.calls == 3 and counting.batch_sizes == [64, 64, 7]
    one_by_one = [Inspector(model, thresholds(), PATCH, STRIDE, "reflect").inspect([image])[0] for image in images]
    for a, b in zip(batched, one_by_one, strict=True):
        assert a.decision == b.decision and a.worst_patch == b.worst_patch
        np.testing.assert_allclose(a.patch_scores, b.patch_scores, atol=1e-6)


def test_any_image_size_is_covered_and_small_images_are_padded(model: keras.Model) -> None:
    inspector = Inspector(model, thresholds(), PATCH, STRIDE, "reflect")
    odd, tiny = inspector.inspect([strip(250, at=(49, 69), shape=(50, 70)), strip(250, at=(3, 4), shape=(10, 12))])
    assert odd.positions[-1] == (50 - PATCH, 70 - PATCH)  # last patch flush with the edges
    assert odd.decision == "FAIL" and odd.worst_patch == (50 - PATCH, 70 - PATCH)
    assert tiny.positions == [(0, 0)] and tiny.decision == "FAIL"


def test_empty_input_gives_no_results(model: keras.Model) -> None:
    assert Inspector(model, thresholds(), PATCH, STRIDE, "reflect").inspect([]) == []


def test_decode_inputs_accepts_encoded_bytes_and_arrays() -> None:
    image = strip(250)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    decoded = decode_inputs([encode_png(image), encode_jpeg(image, quality=100), image.astype(np.int64), rgb])
    np.testing.assert_array_equal(decoded[0], image)
    assert decoded[1].shape == image.shape and np.abs(decoded[1].astype(int) - image).max() < 40
    np.testing.assert_array_equal(decoded[2], image)
    np.testing.assert_array_equal(decoded[3], image)
    assert all(d.dtype == np.uint8 for d in decoded)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (b"not an image", "unknown leading bytes"),
        (np.full((4, 4), 300), "0-255"),
        (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
        ("text", "expected image bytes"),
        (png_header_claiming(60000, 60000), "over the pixel budget"),
        (deflate_bomb_png(30000, 30000), "30000x30000 .* refused before decoding"),
        (
            jpeg_with_corrupt_entropy(np.tile(np.arange(160, dtype=np.uint8), (256, 10))),
            "JPEG data could not be decoded",
        ),
    ],
)
def test_decode_inputs_names_the_bad_item(item: object, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_inputs([encode_png(strip()), item])  # type: ignore[list-item]
    assert info.value.file == "input[1]"


def test_8_and_16_bit_grey_rgb_and_rgba_copies_get_the_same_scores(model: keras.Model) -> None:
    """Stretching 16-bit images to their own brightest pixel made the same strip FAIL as 16-bit and
    HOLD as 8-bit; this model's score is the brightest pixel, so any stretch would show."""
    copies = bit_depth_and_channel_copies(strip(160))
    results = Inspector(model, thresholds(), PATCH, STRIDE, "reflect").inspect(decode_inputs(list(copies.values())))
    assert {r.decision for r in results} == {"HOLD"}
    for result in results[1:]:
        np.testing.assert_array_equal(result.patch_scores, results[0].patch_scores)


def test_inspector_scores_equal_the_evaluation_pipeline_scores(synthetic_dataset: Path) -> None:
    """Inference and evaluation preprocess identically: same patch, same score."""
    from steelqc.config import load_settings
    from steelqc.data.dataset import Dataset
    from steelqc.model import build_model
    from steelqc.patches import build_patch_index
    from steelqc.training import predict_split

    settings = load_settings("demo", {"model.input_size": 32, "data.image_workers": 2})
    dataset = Dataset.open(str(synthetic_dataset))
    index = build_patch_index(dataset, settings.patches, workers=2)
    keras.utils.set_random_seed(3)
    model = build_model(settings.model, settings.patches.size)
    evaluated = predict_split(model, dataset, index, "test", settings)

    test_rows = index[index["split"] == "test"].reset_index(drop=True)
    image_ids = list(dict.fromkeys(test_rows["image_id"]))
    p = settings.patches
    inspector = Inspector(model, thresholds(), p.size, p.stride, p.pad_mode)
    results = inspector.inspect(dataset.load_image(i) for i in image_ids)
    inspected = {
        (image_id, y, x): score
        for image_id, result in zip(image_ids, results, strict=True)
        for (y, x), score in zip(result.positions, result.patch_scores, strict=True)
    }
    assert len(inspected) == len(test_rows)
    expected = [inspected[(r.image_id, r.y, r.x)] for r in test_rows.itertuples()]
    np.testing.assert_allclose(evaluated, expected, rtol=1e-4, atol=1e-5)
