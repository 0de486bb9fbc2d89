"""The retraining flow end to end on generated data (tiny model), in Prefect's ephemeral mode.

Covers: a first run registers a version pending approval; approval promotes it; a second run re-scores
the champion on the same test split (gate evidence carries both), and rejecting it leaves the champion;
a broken champion makes the gate fail safe; data that fails validation never trains.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flows.approval import approve, reject
from flows.retrain import retrain
from steelqc import promotion
from steelqc.config import load_settings
from steelqc.validation import ValidationFailed

from tiny import TINY

pytestmark = pytest.mark.slow



def _run(data: Path) -> dict[str, Any]:
    return retrain(data=str(data), config="demo", overrides=TINY, auto_approve=False)


def test_pending_approve_regate_reject_broken_champion(learnable_dataset: Path) -> None:
    settings = load_settings("demo", TINY)
    first = _run(learnable_dataset)
    assert first["outcome"] == "pending approval", first["gate"]
    assert first["gate"]["champion"] is None
    assert promotion.champion_version(settings) is None  # nothing moves before QA says yes
    assert [p.version for p in promotion.list_pending(settings)] == [first["version"]]

    approve(settings, first["version"], reviewer="qa-lead", comment="first model")
    assert promotion.champion_version(settings) == first["version"]

    second = _run(learnable_dataset)
    evidence = second["gate"]
    assert evidence["champion_version"] == first["version"]
    # The champion was re-scored on this run's test split: same data and split, same model, same numbers.
    for name in ("patch_recall", "image_recall", "patch_precision", "patch_specificity"):
        assert evidence["champion"][name] == pytest.approx(first["metrics"][name])
    # Retraining is not bit-reproducible on CPU threads, so either verdict is possible; neither moves the champion.
    assert second["outcome"] in {"pending approval", "gate failed"}
    if second["outcome"] == "pending approval":
        reject(settings, second["version"], reviewer="qa-lead", comment="no improvement")
    assert promotion.champion_version(settings) == first["version"]

    version = MlflowClient(settings.mlflow_tracking_uri).get_model_version(
        settings.tracking.registered_model, second["version"]
    )
    assert version.tags["approval_status"] in {"rejected", "not_eligible"}
    for tag in ("recall", "precision", "specificity", "t_pass", "t_fail", "data_hash", "git_commit"):
        assert tag in version.tags

    for model_dir in {path.parent for path in settings.mlflow_artifact_root.rglob("MLmodel")}:
        shutil.rmtree(model_dir, ignore_errors=True)  # the champion's artefacts are gone
    third = _run(learnable_dataset)
    assert third["outcome"] == "gate failed"
    assert "failing safe" in third["gate"]["reason"]
    assert promotion.champion_version(settings) == first["version"]



def test_invalid_data_never_trains(synthetic_dataset: Path, tmp_path: Path) -> None:
    settings = load_settings("demo", TINY)
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_dataset, broken)
    labels = (broken / "train.csv").read_text().splitlines()
    labels.append(labels[1].split(",")[0] + ",3,1 5 3 2")  # overlapping runs
    (broken / "train.csv").write_text("\n".join(labels) + "\n")
    with pytest.raises(ValidationFailed):
        retrain(data=str(broken), config="demo", overrides={**TINY, "validation.mode": "fail"}, auto_approve=True)
    client = MlflowClient(settings.mlflow_tracking_uri)
    assert client.search_registered_models() == []
    assert promotion.champion_version(settings) is None
