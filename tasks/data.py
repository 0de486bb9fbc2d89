"""Prefect tasks for the data half of a retraining: generate, scan, validate, label patches, split.

Kept free of TensorFlow and MLflow imports: these are the tasks that fan out over image chunks, and a
Dask worker that runs them should not pay for loading a deep-learning stack it never uses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import DEFAULT
from prefect.context import TaskRunContext

from steelqc.config import Settings
from steelqc.data.dataset import Dataset
from steelqc.data.synth import generate_dataset
from steelqc.patches import assign_splits, index_images, write_index
from steelqc.validation import load_manifest, scan_image_files, validate_dataset
from tasks.retries import IO_RETRIES

# A run resumed after the QA suspension gets DataFrames (and dicts holding them or numpy ints) back from
# result storage; Prefect hashes those by pickle, which differs from the originals', so every task after
# them would re-run: train again, register a second version. Within one flow run they follow from the
# task's other inputs, so they stay out of the cache key (the run id is in it).
RESUMABLE = DEFAULT - "chunks" - "index" - "validation" - "evaluation"



def clean_dataset(manifest_path: str, settings: Settings) -> Dataset:
    """Reopen the dataset restricted to what validation let through."""
    root, image_ids, label_rows, _ = load_manifest(manifest_path)
    return Dataset.configured(root, settings.data).restrict(image_ids, label_rows)


@task(name="generate-data", persist_result=True)
def generate_data(settings: Settings) -> str:
    """The embedded default's data: a generated Severstal-format dataset, made once per synth settings."""
    synth = settings.synth
    out = settings.state_dir / "data" / f"synth-{synth.images}-s{synth.seed}-c{synth.contrast:g}-z{synth.size_scale:g}"
    if not (out / "train.csv").exists():
        generate_dataset(
            out, synth.images, synth.seed, defect_rate=synth.defect_rate, contrast=synth.contrast,
            size_scale=synth.size_scale,
        )
    return str(out)


@task(name="list-image-chunks", persist_result=True, **IO_RETRIES)
def image_chunks(data_root: str, settings: Settings) -> list[list[str]]:
    """The dataset's image files in chunks of ``data.chunk_images``: the unit of fan-out."""
    return _chunks(list(Dataset.configured(data_root, settings.data).image_ids), settings.data.chunk_images)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@task(name="scan-images", persist_result=True, **IO_RETRIES)
def scan_chunk(data_root: str, image_ids: list[str], settings: Settings) -> list[dict[str, Any]]:
    """Read and decode one chunk of images for the images suite (on a Dask worker with ``--runner dask``)."""
    dataset = Dataset.configured(data_root, settings.data)
    return scan_image_files(dataset, image_ids, workers=settings.data.image_workers)


@task(name="validate-data", persist_result=True, **IO_RETRIES)
def validate_data(
    data_root: str, settings: Settings, work_dir: Path, scans: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    """Run the GX gate on the scanned chunks; a failure raises (nothing trains, the champion stays)."""
    dataset = Dataset.configured(data_root, settings.data)
    scanned = [record for chunk in scans for record in chunk]
    result = validate_dataset(
        dataset, settings.validation, work_dir / "validation", workers=settings.data.image_workers, scanned=scanned
    )
    result.raise_if_failed()
    return {
        "manifest_path": str(result.manifest_path),
        "data_hash": result.data_hash,
        "dataset_name": dataset.meta.name,
        "summary": result.lineage(),
        "docs_index": str(result.docs_index),
        "clean_chunks": _chunks(list(result.kept_image_ids), settings.data.chunk_images),
    }


def _chunk_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Patch rows depend only on the validated data, which images, and the patch settings."""
    digest = hashlib.sha1(parameters["settings"].patches.model_dump_json().encode())
    digest.update("\n".join(parameters["image_ids"]).encode())
    return f"patch-rows-{parameters['data_hash']}-{digest.hexdigest()[:16]}"


@task(name="index-patches", cache_key_fn=_chunk_cache_key, persist_result=True)
def index_chunk(manifest_path: str, data_hash: str, image_ids: list[str], settings: Settings) -> pd.DataFrame:
    """Label the patches of one chunk of clean images (cached by data hash, chunk and patch settings)."""
    dataset = clean_dataset(manifest_path, settings)
    return index_images(dataset, image_ids, settings.patches, workers=settings.data.image_workers)


@task(name="split-patch-index", persist_result=True, cache_policy=RESUMABLE)
def split_index(chunks: list[pd.DataFrame], settings: Settings, work_dir: Path) -> pd.DataFrame:
    """Split by image over the whole dataset and write the index beside the run's other outputs."""
    index = assign_splits(pd.concat(chunks, ignore_index=True), settings.patches)
    write_index(index, work_dir / "patch_index.parquet")
    return index
