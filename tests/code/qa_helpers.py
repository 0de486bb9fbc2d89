"""A challenger waiting for QA in a copy of the tiny champion's registry (see ``registry`` in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from steelqc import promotion
from steelqc.config import Settings
from steelqc.data.images import encode_png
from steelqc.gate import gate

CHALLENGER = {"patch_recall": 0.98, "image_recall": 1.0, "patch_precision": 0.6, "patch_specificity": 0.85}
CHAMPION = {"patch_recall": 0.96, "image_recall": 1.0, "patch_precision": 0.5, "patch_specificity": 0.8}
TEST_SPLIT = {"patch_n": 150.0, "patch_n_defective": 50.0, "patch_missed": 1.0}


def pending_challenger(settings: Settings, tmp_path: Path) -> str:
    """A second version (the champion's model files, its own run) whose gate passed against v1: it waits for QA.

    Its run records what a training run does for QA: test metrics with the split's size and the
    gallery of missed defects.
    """
    uri = settings.mlflow_tracking_uri
    client = MlflowClient(uri, registry_uri=uri)
    name = settings.tracking.registered_model
    champion = client.get_model_version(name, "1")
    run = client.create_run(client.get_run(champion.run_id).info.experiment_id)
    for key, value in {**CHALLENGER, **TEST_SPLIT}.items():
        client.log_metric(run.info.run_id, key, value)
    tmp_path.mkdir(parents=True, exist_ok=True)
    gallery = tmp_path / "false_negatives.png"
    gallery.write_bytes(encode_png(np.full((60, 80), 200, np.uint8)))
    client.log_artifact(run.info.run_id, str(gallery), "evaluation/plots")
    client.set_terminated(run.info.run_id)
    version = str(client.create_model_version(name, source=champion.source, run_id=run.info.run_id).version)
    promotion.record_gate(settings, version, gate(CHALLENGER, CHAMPION, recall_target=0.95, champion_version="1"))
    return version


