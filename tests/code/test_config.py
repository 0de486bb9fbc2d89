"""One settings model: profile < env vars < explicit overrides; invalid values fail at start naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steelqc.config import ConfigError, load_settings, resolve_profile


def test_defaults_and_profiles() -> None:
    default = load_settings()
    assert default.model.backbone == "efficientnet_lite0" and default.model.weights == "imagenet"  # works offline
    assert default.patches.size == 256
    demo = load_settings("demo")
    assert demo.profile == "demo" and demo.model.backbone == "small_cnn"
    severstal = load_settings("severstal")
    assert severstal.model.backbone == "efficientnet_lite0" and severstal.model.weights == "imagenet"


def test_no_config_means_the_defaults_except_on_generated_data() -> None:
    assert resolve_profile(None) is None
    assert resolve_profile(None, generated_data=True) == "demo"
    assert resolve_profile("severstal", generated_data=True) == "severstal"


def test_flows_leave_the_profile_to_resolve_profile() -> None:
    import inspect

    from flows.inspect_batch import inspect_batch
    from flows.monitor import monitor
    from flows.retrain import retrain

    for flow in (retrain, monitor, inspect_batch):
        assert inspect.signature(flow.fn).parameters["config"].default is None, flow.name


def test_precedence_profile_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEELQC_TRAIN__BATCH_SIZE", "8")
    assert load_settings("demo").train.batch_size == 8  # env beats the profile's 32
    assert load_settings("demo", {"train.batch_size": 4}).train.batch_size == 4  # explicit beats env


def test_yaml_file_and_errors(tmp_path: Path) -> None:
    custom = tmp_path / "mine.yaml"
    custom.write_text("patches:\n  stride: 64\n")
    assert load_settings(custom).patches.stride == 64
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_settings("nope")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_settings("demo", {"train.batch_size": 0})
    with pytest.raises(ConfigError, match="patches.no_such_field"):
        load_settings(overrides={"patches.no_such_field": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("patches: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="stride larger than size"):
        load_settings(overrides={"patches.size": 64, "patches.stride": 128})


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, isolated_state: Path) -> None:
    assert load_settings().mlflow_tracking_uri == f"sqlite:///{isolated_state / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_settings().mlflow_tracking_uri == "http://127.0.0.1:5999"  # the ecosystem's variable, as is
    explicit = load_settings(overrides={"tracking.tracking_uri": "sqlite:////tmp/x.db"})
    assert explicit.mlflow_tracking_uri == "sqlite:////tmp/x.db"


def test_cli_reports_invalid_config_with_exit_2() -> None:
    from steelqc.cli import app

    result = CliRunner().invoke(app, ["promotions", "--set", "train.batch_size=-1"])
    assert result.exit_code == 2
    assert "train.batch_size" in result.output
    result = CliRunner().invoke(app, ["promotions", "--set", "oops"])
    assert result.exit_code == 2 and "key=value" in result.output
