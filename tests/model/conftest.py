"""Generated data for model-behaviour tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from steelqc.data.dataset import Dataset
from steelqc.data.synth import generate_dataset
from steelqc.patches import build_patch_index

from tiny_model_data import tiny_settings


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, pd.DataFrame]:
    """24 generated 64×256 strips with strong defects and their 32-px patch index (train/val/test by image)."""
    root: Path = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, 24, 3, contrast=2.0, height=64, width=256)
    dataset = Dataset.open(root)
    return dataset, build_patch_index(dataset, tiny_settings().patches, workers=2)
