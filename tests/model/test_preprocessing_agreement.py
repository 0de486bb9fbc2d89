"""Training pipeline, evaluation scoring and inference all feed the model through ``preprocess_patches``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steelqc.config import ThresholdSettings
from steelqc.data.dataset import Dataset
from steelqc.inference import Inspector
from steelqc.input_pipeline import patch_dataset
from steelqc.model import build_model, preprocess_patches
from steelqc.patches import extract_patches
from steelqc.thresholds import choose_thresholds
from steelqc.training import predict_split

from tiny_model_data import tiny_settings


def test_same_patches_give_the_same_scores_everywhere(generated: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = generated
    settings = tiny_settings()
    p = settings.patches
    model = build_model(settings.model, p.size)
    rows = index[index.split == "test"].reset_index(drop=True)
    image_ids = list(dict.fromkeys(rows["image_id"]))

    # by hand: decode, cut, the one preprocessing function, predict
    by_hand = []
    for image_id in image_ids:
        patches, positions = extract_patches(dataset.load_image(image_id), p.size, p.stride, p.pad_mode)
        image_rows = rows[rows.image_id == image_id]
        assert list(zip(image_rows.y, image_rows.x, strict=True)) == positions
        by_hand.append(model.predict(preprocess_patches(patches), verbose=0).ravel())
    expected = np.concatenate(by_hand)

    # the training/evaluation input pipeline yields exactly the preprocessed pixels
    pipeline_x = np.concatenate(
        [x.numpy() for x, _ in patch_dataset(dataset, index, "test", batch_size=7, training=False,
                                             train_settings=settings.train, patch_settings=p)]
    )
    first_image = extract_patches(dataset.load_image(image_ids[0]), p.size, p.stride, p.pad_mode)[0]
    assert pipeline_x.dtype == np.float32 and pipeline_x.max() > 1.0  # 0–255, not normalised
    assert np.array_equal(pipeline_x[: len(first_image)], preprocess_patches(first_image))

    evaluation_scores = predict_split(model, dataset, index, "test", settings)
    np.testing.assert_allclose(evaluation_scores, expected, rtol=1e-5, atol=1e-6)

    thresholds = choose_thresholds([0, 1], [0.2, 0.8], ThresholdSettings(confidence=None))
    inspector = Inspector(model, thresholds, p.size, p.stride, p.pad_mode)
    inspected = inspector.inspect([dataset.load_image(i) for i in image_ids])
    np.testing.assert_allclose(np.concatenate([r.patch_scores for r in inspected]), expected, rtol=1e-5, atol=1e-6)
