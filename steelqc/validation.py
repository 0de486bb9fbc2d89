"""The data validation gate: Great Expectations suites over the labels, the image files and the dataset.

The checks are declared once, in :func:`build_suites`, stored as reviewable JSON in ``expectations/``
and run by GX (which also renders them as Data Docs), so what the gate enforces can be audited without
reading code. Code only computes what GX cannot read from a table: per-row RLE features and a parallel
scan of the image files. Everything that depends on the dataset or the settings (classes, image size,
ImageId pattern, thresholds) is a GX suite parameter, so one stored suite serves every dataset.

Modes: ``fail`` rejects the dataset on any critical failure. ``quarantine`` drops every bad label row
and every bad image -- an image with a bad label row goes whole, since training on a partially labelled
image teaches the model that the unlabelled defect is clean -- and passes when what is left still
satisfies the dataset suite. Exact duplicate images are a *warning*: reported, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from steelqc.config import ValidationSettings
from steelqc.data.dataset import IMAGES_DIR, LABEL_COLUMNS, LABELS_FILE, Dataset, DatasetMeta, labels_to_csv
from steelqc.data.errors import DatasetError, ImageDecodeError, MissingImageError, PathEscapeError, UnsafeImageIdError
from steelqc.data.images import pixel_digest
from steelqc.data.rle import rle_integers

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult

Mode = Literal["fail", "quarantine"]
# progress(done, total): called as work items finish, so a CLI can show a bar with a rate
Progress = Callable[[int, int], None]

SUITES_DIR = Path(__file__).resolve().parents[1] / "expectations"
SUMMARY_FILE = "summary.json"
REJECTED_FILE = "rejected.csv"
MANIFEST_FILE = "manifest.json"
DOCS_DIR = "data_docs"
REJECTED_COLUMNS = ["file", "row", "expectation", "reason"]
EXAMPLES_PER_FAILURE = 5
# Anything that could leave the images folder: '/' or '\' separators, '..', NUL.
UNSAFE_NAME_REGEX = r"[/\\]|\.\.|\x00"
# GX names each unexpected row by these columns: the CSV line, the image file, the dataset's context.
_INDEX_COLUMNS = {
    "labels": ["row", "ImageId"],
    "images": ["file"],
    "dataset": ["images", "defective", "missing_class_ids"],
}
_DOCS_SITE = "steelqc"


def _param(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def build_suites() -> list[gx.ExpectationSuite]:
    """The three suites (labels, images, dataset): the single source of ``expectations/*.json``."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    generated = {"generated_by": "steelqc.validation.build_suites; regenerate with `steelqc validate --write-suites`"}
    labels = gx.ExpectationSuite(
        name="labels",
        meta={**generated, "table": "one row per mask in train.csv, with RLE features computed by steelqc"},
        expectations=[
            gxe.ExpectColumnValuesToNotMatchRegex(
                column="ImageId",
                regex=UNSAFE_NAME_REGEX,
                description="ImageId is a plain file name: no path separator or '..'",
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="ImageId",
                regex=_param("image_id_pattern"),
                description="ImageId matches the dataset's file-name pattern",
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="ClassId", value_set=_param("class_ids"), description="ClassId is one of the dataset's classes"
            ),
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["ImageId", "ClassId"], description="At most one mask per (ImageId, ClassId)"
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="rle_pairs",
                value_set=[True],
                description="EncodedPixels is a non-empty list of integer start/length pairs",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="rle_first_start",
                min_value=1,
                description="Runs start at pixel 1 or later (pixels are 1-indexed)",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="rle_min_length", min_value=1, description="Every run has a positive length"
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="rle_last_pixel",
                max_value=_param("n_pixels"),
                description="Every run ends inside the image (height x width pixels)",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="rle_min_step", min_value=1, description="Runs are sorted by start pixel"
            ),
            gxe.ExpectColumnValuesToBeBetween(column="rle_min_gap", min_value=0, description="Runs do not overlap"),
        ],
    )
    images = gx.ExpectationSuite(
        name="images",
        meta={**generated, "table": "one row per image file or labelled ImageId, from a parallel scan"},
        expectations=[
            gxe.ExpectColumnValuesToNotMatchRegex(
                column="file",
                regex=UNSAFE_NAME_REGEX,
                description="Image name is a plain file name: no path separator or '..'",
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="file",
                regex=_param("image_id_pattern"),
                description="Image name matches the dataset's file-name pattern",
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="exists", value_set=[True], description="Every labelled image exists in train_images/"
            ),
            gxe.ExpectColumnValuesToBeNull(
                column="decode_error", description="The file decodes as an image (format sniffed from its bytes)"
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="height",
                min_value=_param("height"),
                max_value=_param("height"),
                description="Image height as configured",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="width",
                min_value=_param("width"),
                max_value=_param("width"),
                description="Image width as configured",
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="channels", value_set=[1, 3], description="Image has 1 or 3 channels"
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="pixel_range", min_value=1, description="Image is not blank (all pixels the same value)"
            ),
            gxe.ExpectColumnValuesToBeUnique(
                column="pixel_sha1",
                severity=FailureSeverity.WARNING,
                description="No exact duplicate images (a warning: the real set has duplicates with different masks)",
            ),
        ],
    )
    dataset = gx.ExpectationSuite(
        name="dataset",
        meta={**generated, "table": "one row summarising the images and masks that passed the other suites"},
        expectations=[
            gxe.ExpectColumnValuesToBeBetween(
                column="images", min_value=_param("min_images"), description="Enough valid images"
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="defect_rate",
                min_value=_param("defect_rate_min"),
                max_value=_param("defect_rate_max"),
                description="Share of images with a defect inside the configured range",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="missing_classes",
                max_value=_param("max_missing_classes"),
                description="Every class has at least one mask (when required)",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="valid_fraction",
                min_value=_param("min_valid_fraction"),
                description="Share of the image files that passed validation",
            ),
        ],
    )
    return [labels, images, dataset]


def suites_json() -> dict[str, str]:
    """``{file name: JSON text}`` of the suites, exactly as checked in under ``expectations/``."""
    return {
        f"{suite.name}.json": json.dumps(suite.to_json_dict(), indent=2, sort_keys=True) + "\n"
        for suite in build_suites()
    }


def write_suites(directory: Path = SUITES_DIR) -> list[Path]:
    """Regenerate the suite JSON files (after changing :func:`build_suites`)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in suites_json().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def suite_parameters(meta: DatasetMeta, settings: ValidationSettings) -> dict[str, Any]:
    """The values of the suites' ``$PARAMETER`` placeholders for one dataset and settings."""
    return {
        "image_id_pattern": meta.image_id_pattern,
        "class_ids": [str(c) for c in meta.class_ids],
        "n_pixels": meta.height * meta.width,
        "height": meta.height,
        "width": meta.width,
        "min_images": settings.min_images,
        "defect_rate_min": settings.defect_rate_min,
        "defect_rate_max": settings.defect_rate_max,
        "max_missing_classes": 0 if settings.require_all_classes else len(meta.class_ids),
        "min_valid_fraction": settings.min_valid_fraction,
    }


RLE_FEATURES = ["rle_pairs", "rle_first_start", "rle_min_length", "rle_last_pixel", "rle_min_step", "rle_min_gap"]


def rle_features(encoded: str) -> tuple[bool, int | None, int | None, int | None, int | None, int | None]:
    """What the labels suite checks about one EncodedPixels string (1-indexed pixel numbers).

    ``(pairs, first_start, min_length, last_pixel, min_step, min_gap)``: ``pairs`` is False for an
    empty, odd or non-integer string (the rest are then None); ``min_step`` (smallest increase between
    consecutive starts) is None for a single run, ``min_gap`` (free pixels between consecutive runs,
    negative when they overlap) is None unless the runs are sorted. A row passing every bound is exactly
    a row :func:`steelqc.data.rle.parse_runs` accepts as a non-empty mask (both parse with
    :func:`~steelqc.data.rle.rle_integers`).
    """
    try:
        values = rle_integers(encoded)
    except (ValueError, OverflowError):
        return False, None, None, None, None, None
    if not values.size or values.size % 2:
        return False, None, None, None, None, None
    starts, lengths = values[0::2], values[1::2]
    last = starts + lengths - 1
    step = gap = None
    if len(starts) > 1:
        step = int(np.diff(starts).min())
        if step > 0:
            gap = int((starts[1:] - last[:-1] - 1).min())
    return True, int(starts.min()), int(lengths.min()), int(last.max()), step, gap


def label_table(labels: pd.DataFrame) -> pd.DataFrame:
    """The labels suite's batch: the label rows plus their RLE features."""
    features = pd.DataFrame(
        [rle_features(encoded) for encoded in labels["EncodedPixels"]], columns=RLE_FEATURES, index=labels.index
    )
    for column in RLE_FEATURES[1:]:
        features[column] = features[column].astype("float64")  # NaN where not applicable; GX skips it
    return pd.concat([labels[[*LABEL_COLUMNS, "row"]], features], axis=1)


IMAGE_COLUMNS = [
    "file", "exists", "decode_error", "format", "height", "width", "channels", "pixel_range",
    "n_bytes", "byte_sha1", "pixel_sha1",
]  # fmt: skip


def _scan_one(dataset: Dataset, image_id: str) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(IMAGE_COLUMNS)
    record.update(file=image_id, exists=False)
    try:
        data = dataset.image_bytes(image_id)
    except (UnsafeImageIdError, MissingImageError):
        return record  # the name / existence expectations report it
    except PathEscapeError as exc:  # a symlink out of the dataset: exists, but is never read
        record.update(exists=True, decode_error=exc.reason)
        return record
    record.update(exists=True, n_bytes=len(data), byte_sha1=hashlib.sha1(data).hexdigest())
    try:
        decoded = dataset.decode_image(data, image_id)
    except ImageDecodeError as exc:
        record["decode_error"] = exc.reason
        return record
    pixels = decoded.pixels
    record.update(
        format=decoded.format,
        height=pixels.shape[0],
        width=pixels.shape[1],
        channels=decoded.channels,
        pixel_range=int(pixels.max()) - int(pixels.min()),
        pixel_sha1=pixel_digest(pixels),
    )
    return record


def scan_image_files(
    dataset: Dataset, image_ids: Sequence[str], *, workers: int = 4, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Scan records of some of the dataset's image files: the unit a flow fans out over workers.

    ``progress(done, total)`` is called after each file (a scan of 12,568 strips takes minutes).
    """
    records: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for record in pool.map(lambda image_id: _scan_one(dataset, image_id), image_ids):
            records.append(record)
            if progress is not None:
                progress(len(records), len(image_ids))
    return records


def scan_images(
    dataset: Dataset,
    *,
    workers: int = 4,
    scanned: Sequence[dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The images suite's batch: one row per file in ``train_images/`` and per labelled ImageId.

    Files are read and decoded by content in a thread pool (OpenCV and I/O release the GIL), unless
    ``scanned`` already holds the records of every file (from :func:`scan_image_files` run elsewhere).
    An ImageId with a mask but no file gets ``exists=False`` without touching storage. (An image the old
    CSV layout lists with empty masks only is clean; without a file it is simply not in the dataset.)
    """
    referenced = set(dataset.labels["ImageId"])
    listed = set(dataset.image_ids)
    records = (
        list(scanned)
        if scanned is not None
        else scan_image_files(dataset, dataset.image_ids, workers=workers, progress=progress)
    )
    if sorted(r["file"] for r in records) != sorted(listed):
        raise ValueError("scanned records must cover exactly the dataset's image files")
    records += [
        {**dict.fromkeys(IMAGE_COLUMNS), "file": image_id, "exists": False} for image_id in sorted(referenced - listed)
    ]
    table = pd.DataFrame.from_records(records, columns=IMAGE_COLUMNS)
    table["exists"] = table["exists"].astype(bool)
    for column in ["height", "width", "channels", "pixel_range", "n_bytes"]:
        table[column] = table[column].astype("float64")
    return table


def compute_data_hash(labels: pd.DataFrame, image_sha1: Mapping[str, str]) -> str:
    """sha256 of the labels (sorted, new CSV layout) and the sorted ``(image id, content sha1)`` list.

    Independent of row order and of the CSV layout (old or new), so it names the data, not the file.
    """
    digest = hashlib.sha256(labels_to_csv(labels.sort_values(LABEL_COLUMNS)))
    for image_id in sorted(image_sha1):
        digest.update(f"{image_id}\t{image_sha1[image_id]}\n".encode())
    return digest.hexdigest()


class _SuiteRunner:
    """One ephemeral GX context per validation: suites, a pandas datasource, Data Docs in ``docs_dir``."""

    def __init__(self, docs_dir: Path, parameters: dict[str, Any]) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            data_docs_sites={
                _DOCS_SITE: {
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                }
            },
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        self.context = gx.get_context(project_config=config, mode="ephemeral")
        self.source = self.context.data_sources.add_pandas("steelqc")
        self.suites = {suite.name: self.context.suites.add(suite) for suite in build_suites()}
        self.parameters = parameters

    def run(self, name: str, table: pd.DataFrame) -> ExpectationSuiteValidationResult:
        import great_expectations as gx

        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=self.suites[name])
        )
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": _INDEX_COLUMNS[name]}
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(name=name, validation_definitions=[definition], result_format=result_format)
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": table}, expectation_parameters=self.parameters)
        return next(iter(outcome.run_results.values()))

    def build_docs(self) -> None:
        """Render the suites and every stored result once, at the end (a build per run triples GX's time)."""
        self.context.build_data_docs(site_names=[_DOCS_SITE])


@dataclass(frozen=True)
class _Failure:
    """One failed expectation and the rows (label rows or image files) it named."""

    suite: str
    expectation: str
    column: str | None
    severity: str
    description: str
    unexpected_count: int
    entries: list[dict[str, Any]]  # GX's unexpected index list, or the unexpected values

    @property
    def label(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation

    def reason(self, entry: Mapping[str, Any]) -> str:
        shown = ", ".join(f"{k}={_plain(v)}" for k, v in entry.items() if k not in ("row", "file"))
        return f"{self.description}; got {shown}" if shown else self.description

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "expectation": self.expectation,
            "column": self.column,
            "severity": self.severity,
            "description": self.description,
            "unexpected_count": self.unexpected_count,
            "examples": [{k: _plain(v) for k, v in e.items()} for e in self.entries[:EXAMPLES_PER_FAILURE]],
        }


def _plain(value: Any) -> Any:
    """JSON-friendly example values: GX hands back numpy scalars, floats for integer columns, strings for indices."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _gx_error(info: Mapping[str, Any]) -> str | None:
    """GX's message when it could not evaluate an expectation (flat, or nested per metric)."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    nested = [v for v in info.values() if isinstance(v, Mapping) and v.get("raised_exception")]
    return str(nested[0].get("exception_message")) if nested else None


def _failures(suite: str, validation: ExpectationSuiteValidationResult) -> list[_Failure]:
    failures = []
    for outcome in validation.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        assert config is not None  # GX attaches its configuration to every result of a suite run
        error = _gx_error(outcome.exception_info or {})
        if error:
            raise RuntimeError(f"GX could not evaluate {config.type} on suite {suite!r}: {error}")
        kwargs = config.kwargs
        column = kwargs.get("column") or (",".join(kwargs["column_list"]) if "column_list" in kwargs else None)
        result = outcome.result
        # Every steelqc expectation is row-wise, so GX names the rows; a table-level one shows its value.
        named = result.get("unexpected_index_list") or [{"observed_value": result.get("observed_value")}]
        entries = [dict(e) for e in named]
        failures.append(
            _Failure(
                suite=suite,
                expectation=config.type,
                column=column,
                severity=str(getattr(config.severity, "value", config.severity)),
                description=config.description or config.type,
                unexpected_count=int(result.get("unexpected_count", len(entries))),
                entries=entries,
            )
        )
    return failures


def _quarantine(
    labels: pd.DataFrame, image_ids: Sequence[str], failures: Sequence[_Failure]
) -> tuple[tuple[str, ...], pd.DataFrame]:
    """The image files that survive every critical failure, and one ``rejected.csv`` line per reason.

    A bad label row takes its whole image with it, and a bad image takes all its label rows.
    """
    bad_rows: dict[int, list[tuple[str, str]]] = defaultdict(list)
    bad_images: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for failure in failures:
        if failure.severity != "critical":
            continue
        for entry in failure.entries:
            if failure.suite == "labels":
                bad_rows[int(entry["row"])].append((failure.label, failure.reason(entry)))
            else:
                bad_images[str(entry["file"])].append((failure.label, failure.reason(entry)))
    rows_by_image = labels.groupby("ImageId")["row"].apply(list).to_dict()
    image_of_row = dict(zip(labels["row"].astype(int), labels["ImageId"], strict=True))
    dropped_for_rows = {image_of_row[r] for r in bad_rows} - set(bad_images)
    dropped = set(bad_images) | dropped_for_rows

    records: list[tuple[str, int | None, str, str]] = [
        (LABELS_FILE, row, exp, why) for row, items in sorted(bad_rows.items()) for exp, why in items
    ]
    records += [(f"{IMAGES_DIR}/{i}", None, exp, why) for i, items in sorted(bad_images.items()) for exp, why in items]
    for image_id in sorted(dropped_for_rows & set(image_ids)):
        rows = sorted(r for r in rows_by_image[image_id] if r in bad_rows)
        records.append((f"{IMAGES_DIR}/{image_id}", None, "quarantine", f"dropped whole: label row(s) {rows} failed"))
    for image_id in sorted(dropped):
        for row in rows_by_image.get(image_id, []):
            if row not in bad_rows:
                records.append((LABELS_FILE, row, "quarantine", f"dropped with image {image_id}, which failed"))
    rejected = pd.DataFrame.from_records(records, columns=REJECTED_COLUMNS).astype({"row": "Int64"})
    return tuple(i for i in image_ids if i not in dropped), rejected


def _dataset_table(dataset: Dataset, kept_images: Sequence[str], kept_labels: pd.DataFrame) -> pd.DataFrame:
    defective = kept_labels["ImageId"].nunique()
    present = {str(c) for c in kept_labels["ClassId"]}
    missing = [str(c) for c in dataset.meta.class_ids if str(c) not in present]
    n_images = len(dataset.image_ids)
    return pd.DataFrame(
        {
            "images": [len(kept_images)],
            "defective": [defective],
            "defect_rate": [defective / len(kept_images) if kept_images else 0.0],
            "missing_classes": [len(missing)],
            "missing_class_ids": [",".join(missing)],
            "valid_fraction": [len(kept_images) / n_images if n_images else 0.0],
        }
    )


@dataclass(frozen=True)
class ValidationResult:
    """What the gate decided, what it kept, and where its reports are."""

    success: bool
    mode: Mode
    root: str
    data_hash: str  # of the data that passed (all of it in fail mode when valid): lineage for later stages
    input_hash: str  # of everything that was read, valid or not
    n_images: int
    n_label_rows: int
    n_rejected_rows: int
    n_rejected_images: int
    failed_expectations: list[dict[str, Any]]
    rejected: pd.DataFrame
    kept_image_ids: tuple[str, ...]
    kept_label_rows: tuple[int, ...]
    duplicates: list[list[str]]
    summary_path: Path
    rejected_path: Path
    manifest_path: Path | None  # written only when the data may be used
    docs_index: Path

    def clean(self, dataset: Dataset) -> Dataset:
        """``dataset`` restricted to what passed; refuses a failed validation or a changed dataset."""
        if not self.success:
            raise ValidationFailed(self)
        missing = set(self.kept_image_ids) - set(dataset.image_ids)
        if missing:
            raise DatasetError(
                f"{len(missing)} validated images are no longer in the dataset (e.g. {sorted(missing)[0]}); "
                "validate again",
                file=dataset.root,
            )
        return dataset.restrict(self.kept_image_ids, self.kept_label_rows)

    def lineage(self) -> dict[str, Any]:
        """The facts of this validation worth recording with a model: outcome, counts and hashes."""
        return {
            "success": self.success,
            "mode": self.mode,
            "data_hash": self.data_hash,
            "input_hash": self.input_hash,
            "n_images": self.n_images,
            "n_label_rows": self.n_label_rows,
            "n_rejected_rows": self.n_rejected_rows,
            "n_rejected_images": self.n_rejected_images,
            "n_duplicate_groups": len(self.duplicates),
            "failed_expectations": [f"{f['suite']}.{f['expectation']}" for f in self.failed_expectations],
        }

    def raise_if_failed(self) -> None:
        """Stop a pipeline here: no model may train on data that failed validation."""
        if not self.success:
            raise ValidationFailed(self)


class ValidationFailed(Exception):
    """The data failed the gate; ``.result`` holds the failed expectations and report paths."""

    def __init__(self, result: ValidationResult) -> None:
        self.result = result
        critical = [f for f in result.failed_expectations if f["severity"] == "critical"]
        names = ", ".join(f"{f['suite']}.{f['expectation']}({f['column']})" for f in critical[:5])
        super().__init__(
            f"validation failed ({result.mode} mode): {len(critical)} expectation(s) failed: {names}; "
            f"see {result.summary_path} and {result.docs_index}"
        )


def validate_dataset(
    dataset: Dataset,
    settings: ValidationSettings,
    report_dir: str | Path,
    *,
    mode: Mode | None = None,
    workers: int = 4,
    scanned: Sequence[dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> ValidationResult:
    """Run the labels, images and dataset suites; write Data Docs, ``summary.json``, ``rejected.csv``
    and (when the data may be used) ``manifest.json`` into ``report_dir``.

    Never raises for bad data -- the result says what failed; call :meth:`ValidationResult.raise_if_failed`
    to stop a pipeline. ``mode`` overrides ``settings.mode``. ``scanned`` passes image scan records
    computed elsewhere (a flow's workers) instead of scanning here; ``progress(done, total)`` follows the
    scan otherwise. A ``report_dir`` this call created
    is removed again if it raises, so no half-written report is left behind.
    """
    report = Path(report_dir).resolve()  # GX's Data Docs store refuses a relative folder
    new_folders = [folder for folder in (report, *report.parents) if not folder.exists()]
    report.mkdir(parents=True, exist_ok=True)
    try:
        return _validate_into(report, dataset, settings, mode or settings.mode, workers, scanned, progress)
    except BaseException:
        if new_folders:
            shutil.rmtree(new_folders[-1], ignore_errors=True)
        raise


def _validate_into(
    report: Path,
    dataset: Dataset,
    settings: ValidationSettings,
    mode: Mode,
    workers: int,
    scanned: Sequence[dict[str, Any]] | None,
    progress: Progress | None,
) -> ValidationResult:
    docs_dir = report / DOCS_DIR
    shutil.rmtree(docs_dir, ignore_errors=True)  # a report folder shows one validation, not a history
    timings: dict[str, float] = {}

    started = time.perf_counter()
    labels = dataset.labels
    images = scan_images(dataset, workers=workers, scanned=scanned, progress=progress)
    labels_batch = label_table(labels)
    timings["scan_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    runner = _SuiteRunner(docs_dir, suite_parameters(dataset.meta, settings))
    failures = _failures("labels", runner.run("labels", labels_batch))
    failures += _failures("images", runner.run("images", images))

    kept_image_ids, rejected = _quarantine(labels, dataset.image_ids, failures)
    kept_labels = labels[labels["ImageId"].isin(set(kept_image_ids))]
    failures += _failures("dataset", runner.run("dataset", _dataset_table(dataset, kept_image_ids, kept_labels)))
    runner.build_docs()
    timings["gx_seconds"] = time.perf_counter() - started

    critical = [f for f in failures if f.severity == "critical"]
    success = not critical if mode == "fail" else not any(f.suite == "dataset" for f in critical)
    present = images[images["exists"]]
    hashes = dict(zip(present["file"], present["byte_sha1"], strict=True))
    same_pixels = images.dropna(subset=["pixel_sha1"]).groupby("pixel_sha1")["file"].apply(sorted)
    result = ValidationResult(
        success=success,
        mode=mode,
        root=dataset.root,
        data_hash=compute_data_hash(kept_labels, {i: hashes[i] for i in kept_image_ids}),
        input_hash=compute_data_hash(labels, hashes),
        n_images=len(dataset.image_ids),
        n_label_rows=len(labels),
        n_rejected_rows=len(labels) - len(kept_labels),
        n_rejected_images=len(dataset.image_ids) - len(kept_image_ids),
        failed_expectations=[f.to_dict() for f in failures],
        rejected=rejected,
        kept_image_ids=kept_image_ids,
        kept_label_rows=tuple(int(r) for r in kept_labels["row"]),
        duplicates=sorted(group for group in same_pixels if len(group) > 1),
        summary_path=report / SUMMARY_FILE,
        rejected_path=report / REJECTED_FILE,
        manifest_path=report / MANIFEST_FILE if success else None,
        docs_index=docs_dir / "index.html",
    )
    _write_reports(result, settings, timings)
    return result


def _write_reports(result: ValidationResult, settings: ValidationSettings, timings: dict[str, float]) -> None:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    result.rejected.to_csv(result.rejected_path, index=False)
    stale_manifest = result.summary_path.parent / MANIFEST_FILE
    stale_manifest.unlink(missing_ok=True)  # a failed run must not leave an older clean manifest behind
    if result.manifest_path is not None:
        manifest = {
            "root": result.root,
            "data_hash": result.data_hash,
            "created_at": created,
            "image_ids": list(result.kept_image_ids),
            "label_rows": list(result.kept_label_rows),
        }
        result.manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    summary = {
        "success": result.success,
        "mode": result.mode,
        "root": result.root,
        "created_at": created,
        "data_hash": result.data_hash,
        "input_hash": result.input_hash,
        "n_images": result.n_images,
        "n_label_rows": result.n_label_rows,
        "n_kept_images": len(result.kept_image_ids),
        "n_kept_label_rows": len(result.kept_label_rows),
        "n_rejected_rows": result.n_rejected_rows,
        "n_rejected_images": result.n_rejected_images,
        "rejected_by_expectation": result.rejected.groupby("expectation").size().to_dict(),
        "failed_expectations": result.failed_expectations,
        "duplicates": result.duplicates,
        "settings": settings.model_dump(),
        "reports": {
            "data_docs": str(result.docs_index),
            "rejected": str(result.rejected_path),
            "manifest": str(result.manifest_path) if result.manifest_path else None,
        },
        **{k: round(v, 3) for k, v in timings.items()},
    }
    result.summary_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")


def load_manifest(path: str | Path) -> tuple[str, list[str], list[int], str]:
    """``(root, image_ids, label_rows, data_hash)`` of a clean manifest written by :func:`validate_dataset`.

    Reopen the data with ``Dataset.open(root).restrict(image_ids, label_rows)``.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
        return (
            str(manifest["root"]),
            [str(i) for i in manifest["image_ids"]],
            [int(r) for r in manifest["label_rows"]],
            str(manifest["data_hash"]),
        )
    except FileNotFoundError:
        raise DatasetError("no clean manifest (did validation pass?)", file=str(path)) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"invalid manifest: {exc}", file=str(path)) from exc
