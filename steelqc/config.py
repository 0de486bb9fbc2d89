"""One settings model for every stage: YAML profile, then ``STEELQC_*`` env vars, then explicit overrides.

Precedence (highest first): overrides passed in code/CLI flags > ``STEELQC_<SECTION>__<FIELD>`` env vars >
the YAML profile > defaults. The ecosystem's own variables (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``,
``AWS_*``, ``MLFLOW_S3_ENDPOINT_URL``) are read where they are used, by the libraries themselves, and
are never renamed; only the embedded default for MLflow is filled in here when none is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from steelqc.env import default_state_dir

PROFILE_DIR = Path(__file__).parent / "configs"
#: The profile of a run on generated data when none is named: tuned to those strips on 2 CPU cores.
GENERATED_DATA_PROFILE = "demo"
#: How a patch grid pads an image smaller than a patch (numpy.pad's modes).
PadMode = Literal["reflect", "constant", "edge"]
#: How a model scores an image: each patch through the whole network, or the backbone once over the strip.
InferenceMode = Literal["patches", "strip"]
PATCHES: Final = "patches"
STRIP: Final = "strip"
#: Input pixels per feature-map cell of each backbone (five stride-2 stages; the small CNN's four poolings).
BACKBONE_STRIDES = {"efficientnet_lite0": 32, "efficientnetb0": 32, "small_cnn": 16}


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending field(s)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Section):
    """Where the dataset lives and what its images must look like."""

    root: str | None = Field(None, description="Dataset folder or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint for datasets, patch log and inspected images; default: boto3's own "
        "($AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, the AWS config file)",
    )
    image_workers: int = Field(4, ge=1, description="Threads decoding images in parallel")
    chunk_images: int = Field(256, ge=1, description="Images per fan-out task (validation scan, patch indexing)")
    max_image_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Images whose header claims more pixels are refused before decoding: a 900 KB PNG can "
        "claim 30000x30000 (a Severstal strip is 0.4 MP)",
    )


class SynthSettings(_Section):
    """Generated Severstal-like data for the embedded default and tests."""

    images: int = Field(200, ge=1)
    seed: int = 0
    defect_rate: float = Field(0.53, ge=0.0, le=1.0)
    contrast: float = Field(1.0, gt=0.0, description="Defect contrast multiplier (<1 harder, >1 easier)")
    size_scale: float = Field(1.0, gt=0.0, description="Defect size multiplier")


class ValidationSettings(_Section):
    """Thresholds of the dataset-level expectations and what happens to bad rows."""

    mode: Literal["fail", "quarantine"] = "fail"
    min_images: int = Field(10, ge=1)
    defect_rate_min: float = Field(0.05, ge=0.0, le=1.0)
    defect_rate_max: float = Field(0.95, ge=0.0, le=1.0)
    require_all_classes: bool = True
    min_valid_fraction: float = Field(
        0.9, ge=0.0, le=1.0, description="Quarantine mode fails when fewer images than this survive"
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> ValidationSettings:
        if self.defect_rate_min > self.defect_rate_max:
            raise ValueError("defect_rate_min must not exceed defect_rate_max")
        return self


class PatchSettings(_Section):
    """Patch grid, label rule and the by-image split."""

    size: int = Field(256, ge=8)
    stride: int = Field(128, ge=1)
    min_defect_pixels: int = Field(32, ge=1)
    pad_mode: PadMode = "reflect"
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_leave_training(self) -> PatchSettings:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        if self.stride > self.size:
            raise ValueError("stride larger than size would leave pixels uncovered")
        return self


class ModelSettings(_Section):
    """Backbone and input geometry."""

    backbone: Literal["efficientnet_lite0", "efficientnetb0", "small_cnn"] = "efficientnet_lite0"
    weights: str = Field("imagenet", description="imagenet | none | path to a .h5 / .weights.h5 file")
    input_size: int = Field(256, ge=32, description="Patches are resized to this before the backbone")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    fine_tune_blocks: int = Field(2, ge=0, description="Top backbone blocks unfrozen in stage two")


class InferenceSettings(_Section):
    """How the registered model scores images; thresholds and evaluation use the same mode."""

    mode: InferenceMode = Field(
        "patches",
        description="patches: every patch through the whole model; strip: the backbone once over the whole image, "
        "each patch window scored from the pooled feature map (needs patch size and stride on the backbone's grid)",
    )


def strip_cell(model: ModelSettings, patches: PatchSettings) -> int:
    """Image pixels per backbone feature cell in strip mode; ConfigError unless patches sit on whole cells."""
    stride = BACKBONE_STRIDES[model.backbone]
    cell, remainder = divmod(stride * patches.size, model.input_size)
    if remainder or patches.size % cell or patches.stride % cell:
        raise ConfigError(
            f"inference.mode=strip needs patches.size ({patches.size}) and patches.stride ({patches.stride}) to be "
            f"multiples of the {model.backbone} feature cell ({stride} px x patches.size / model.input_size = "
            f"{stride * patches.size / model.input_size:g} px): e.g. model.input_size = patches.size"
        )
    return cell


class TrainSettings(_Section):
    """Two-stage, class-weighted training with early stopping on validation PR-AUC."""

    batch_size: int = Field(16, ge=1)
    epochs_frozen: int = Field(3, ge=0)
    epochs_finetune: int = Field(5, ge=0)
    learning_rate: float = Field(1e-3, gt=0.0)
    finetune_learning_rate: float = Field(1e-4, gt=0.0)
    patience: int = Field(3, ge=1)
    augment: bool = True
    cache: bool = False
    balanced_sampling: bool = False
    max_train_patches: int | None = Field(None, ge=1, description="Cap per epoch (demo speed)")
    seed: int = 1234


class ThresholdSettings(_Section):
    """Recall-first operating points chosen on validation scores only."""

    recall_target: float = Field(0.995, gt=0.0, le=1.0)
    confidence: float | None = Field(0.95, gt=0.0, lt=1.0)
    precision_target: float = Field(0.95, gt=0.0, le=1.0)


class TrackingSettings(_Section):
    """MLflow experiment and registry names; the URI itself comes from ``MLFLOW_TRACKING_URI``."""

    tracking_uri: str | None = Field(None, description="Overrides $MLFLOW_TRACKING_URI; default SQLite in state dir")
    experiment_prefix: str = "steelqc"
    registered_model: str = "steelqc"
    claim_settle_seconds: float = Field(
        1.0,
        gt=0.0,
        description="With a tracking server: how long a promotion decision waits after writing its registry claim; "
        "longer than any client's tag read-to-write time",
    )


class GateSettings(_Section):
    """Champion/challenger promotion rule and QA approval wait."""

    recall_tolerance: float = Field(0.0, ge=0.0, le=1.0)
    recall_target: float | None = Field(
        None, gt=0.0, le=1.0, description="Minimum test patch recall; default thresholds.recall_target"
    )
    min_patch_specificity: float = Field(
        0.1, ge=0.0, le=1.0, description="A model that flags more clean patches than this allows is useless"
    )
    approval_timeout_hours: float = Field(72.0, gt=0.0)


class MonitoringSettings(_Section):
    """Production patch log and drift detection."""

    log_dir: str | None = Field(None, description="Local folder or s3:// prefix; default <state>/patch-log")
    drift_share: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Share of drifted columns that means drift; 0.1 = any one of the 7 (a light change moves one)",
    )
    drift_method: str = Field("wasserstein", description="Evidently stat test per column (effect size, not p-value)")
    drift_threshold: float = Field(
        0.5, gt=0.0, description="Per-column threshold of drift_method (wasserstein: reference std units)"
    )
    window_days: int = Field(7, ge=1, description="Days of patch log `steelqc monitor` reads by default")
    novel_share_rise: float = Field(
        2.0,
        gt=1.0,
        description="Novelty guard: a day whose share of novel patches is provably (95%) above this many times "
        "the reference's share is drift",
    )
    trigger_retrain: bool = False
    image_tail: float = Field(
        0.005,
        gt=0.0,
        lt=0.5,
        description="One image vs the reference: a patch is unusual outside the reference's [tail, 1-tail] quantiles",
    )
    image_unusual_share: float = Field(
        0.5, gt=0.0, le=1.0, description="One image is unlike the training data when this share of its patches is "
        "unusual in some feature",
    )


class NoveltySettings(_Section):
    """Novel-defect guard: nearest-neighbour novelty against clean training patches, calibrated on validation."""

    enabled: bool = Field(False, description="Build the bank at training; a model logged with one applies it")
    layer: Literal["pool", "embedding"] = Field(
        "pool",
        description="pool: the backbone's pooled features (generic appearance); embedding: the 64-unit head "
        "layer monitoring logs (trained to separate known defects, so weaker for unseen ones; exports have it)",
    )
    bank_size: int = Field(1000, ge=1, description="Bank entries kept from the clean training patches")
    source_patches: int = Field(5000, ge=1, description="Clean training patches embedded before subsampling")
    subsample: Literal["coreset", "random"] = Field("coreset", description="Greedy k-centre coreset or random")
    k: int = Field(1, ge=1, description="Novelty = mean distance to the k nearest bank entries")
    max_clean_hold_rate: float = Field(
        0.03, gt=0.0, lt=1.0, description="False-alarm budget: share of clean images the guard may HOLD"
    )
    confidence: float | None = Field(0.95, gt=0.0, lt=1.0, description="Clopper-Pearson level of that budget")
    prove_budget: bool = Field(
        False,
        description="Threshold where the budget's upper bound (not the observed rate) is met: fewer false alarms, "
        "but with ~100 clean validation images it is their highest score and the guard catches less",
    )
    seed: int = 0


class AppSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    max_upload_mb: int = Field(20, ge=1)
    max_batch_images: int = Field(200, ge=1, description="Most images the Inspect page decides at once")
    mlflow_ui_url: str | None = Field(
        None, description="MLflow UI the QA page links to; default the tracking URI when it is http(s), else "
        "http://127.0.0.1:5000 (mlflow ui)",
    )
    prefect_ui_url: str | None = Field(
        None, description="Prefect UI the QA page links flow runs to; default PREFECT_API_URL without /api"
    )


class Settings(BaseSettings):
    """The whole configuration of a steelqc run."""

    model_config = SettingsConfigDict(
        env_prefix="STEELQC_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: str = "default"
    state_dir: Path = Field(default_factory=default_state_dir)
    data: DataSettings = DataSettings()
    synth: SynthSettings = SynthSettings()
    validation: ValidationSettings = ValidationSettings()
    patches: PatchSettings = PatchSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    inference: InferenceSettings = InferenceSettings()
    thresholds: ThresholdSettings = ThresholdSettings()
    tracking: TrackingSettings = TrackingSettings()
    gate: GateSettings = GateSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    novelty: NoveltySettings = NoveltySettings()
    app: AppSettings = AppSettings()

    @model_validator(mode="after")
    def _strip_mode_fits_the_backbone(self) -> Settings:
        if self.inference.mode == STRIP:
            try:
                strip_cell(self.model, self.patches)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env vars beat the YAML profile, which is passed as init kwargs; explicit overrides are
        # applied afterwards in load_settings so they beat both.
        return (env_settings, init_settings)

    @property
    def mlflow_tracking_uri(self) -> str:
        """Explicit setting > ``$MLFLOW_TRACKING_URI`` > SQLite under the state dir."""
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def gate_recall_target(self) -> float:
        """The test recall a challenger must reach: ``gate.recall_target``, else the thresholds' target."""
        return self.gate.recall_target if self.gate.recall_target is not None else self.thresholds.recall_target


class _ResolvedSettings(Settings):
    """Settings validated from already-merged values: the environment is not applied a second time."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def profile_path(name_or_path: str | Path) -> Path:
    """Resolve a packaged profile name (``demo``, ``real``, ``severstal``) or accept a path to any YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if candidate.exists():
            return candidate
        packaged = PROFILE_DIR / candidate.name
        if packaged.exists():
            return packaged
        raise ConfigError(f"config file not found: {candidate}")
    packaged = PROFILE_DIR / f"{name_or_path}.yaml"
    if not packaged.exists():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown profile {name_or_path!r} (known: {known})")
    return packaged


def resolve_profile(config: str | None, *, generated_data: bool = False) -> str | None:
    """The profile a run loads when given ``--config`` / ``config`` (None = not given): the one named; else
    :data:`GENERATED_DATA_PROFILE` for a run on generated data; else None, the built-in defaults.

    The defaults are production settings (EfficientNetB0 with ImageNet weights, recall 0.995 proven at 95 %):
    on a few hundred generated strips they would need a download and hours for a toy result. Every entry point
    (CLI, flows, app) resolves ``config`` here, so no config means the same thing everywhere.
    """
    if config is not None:
        return config
    return GENERATED_DATA_PROFILE if generated_data else None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from a profile name or YAML path, env vars, and ``{"train.epochs": 2}`` overrides.

    Raises :class:`ConfigError` naming every invalid field, so a bad config fails at start.
    """
    profile: dict[str, Any] = {}
    if config is not None:
        path = profile_path(config)
        try:
            profile = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(profile, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        profile.setdefault("profile", path.stem)
    try:
        settings = Settings(**profile)
        if overrides:
            data = _deep_merge(settings.model_dump(), _dotted_to_nested(overrides))
            settings = _ResolvedSettings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
    return settings
