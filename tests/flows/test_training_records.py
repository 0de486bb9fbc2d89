"""The production path records what the plain path records: `steelqc train` (``run_training_job``) and the
retraining flow (``steelqc pipeline``) on the same tiny data leave runs and versions with the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.retrain import retrain
from steelqc import promotion
from steelqc.config import load_settings
from steelqc.tracking import TAG_PROCESS
from steelqc.train_job import run_training_job

from tiny import TINY

pytestmark = pytest.mark.slow

# What only the flow writes, by design: the link to its Prefect run, and the gate's verdict on the version.
FLOW_RUN_TAGS = {"prefect.flow_run_id"}
# What only `steelqc train` writes: the process its one run lives in (a flow's tasks may run in several).
TRAIN_RUN_TAGS = {TAG_PROCESS}
GATE_VERSION_TAGS = {
    promotion.TAG_GATE,
    promotion.TAG_GATE_REASON,
    promotion.TAG_GATE_CHAMPION,
    "gate_evidence",
    promotion.TAG_APPROVAL,
}


def test_train_and_pipeline_record_the_same_params_metrics_and_tags(learnable_dataset: Path) -> None:
    settings = load_settings("demo", TINY)
    plain = run_training_job(str(learnable_dataset), settings)
    production = retrain(data=str(learnable_dataset), config="demo", overrides=TINY, auto_approve=False)

    client = MlflowClient(settings.mlflow_tracking_uri)
    plain_run, production_run = client.get_run(plain.run_id), client.get_run(production["run_id"])
    assert set(production_run.data.params) == set(plain_run.data.params)
    assert set(production_run.data.metrics) == set(plain_run.data.metrics)
    assert set(production_run.data.tags) | TRAIN_RUN_TAGS == set(plain_run.data.tags) | FLOW_RUN_TAGS
    # what the flow's own logging lacked before both paths shared the library's functions
    assert {"best_epoch", "best_stage", "val_specificity_at_pass"} <= set(production_run.data.metrics)
    assert {"thresholds.bound_met", "thresholds.note", "work_dir"} <= set(production_run.data.tags)

    name = settings.tracking.registered_model
    plain_version = client.get_model_version(name, plain.version)
    production_version = client.get_model_version(name, production["version"])
    assert set(production_version.tags) == set(plain_version.tags) | GATE_VERSION_TAGS
    assert not set(plain_version.tags) & GATE_VERSION_TAGS
