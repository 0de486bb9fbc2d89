"""A Prefect flow that maps patch indexing over image chunks gives the same patch index on a real 2-worker
Dask LocalCluster as on the local thread pool, and the same as indexing the whole dataset in one call.

Dask's worker processes report task states to the Prefect API, so the test runs a Prefect server on
127.0.0.1 as production does (without one, every worker process would start its own temporary server).
"""

from __future__ import annotations

import os
import sys

import cloudpickle
import pandas as pd
import pytest
from prefect import flow, task, unmapped

from flows.runners import task_runner
from steelqc.config import PatchSettings
from steelqc.data.dataset import Dataset
from steelqc.patches import assign_splits, build_patch_index, index_images

pytestmark = pytest.mark.slow

# Dask's worker processes cannot import this test module by name; ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PATCHES = PatchSettings(size=64, stride=32, min_defect_pixels=8)


@task
def index_chunk(root: str, image_ids: list[str], settings: PatchSettings) -> tuple[int, pd.DataFrame]:
    """Patch rows of one chunk of images (and the process that built them)."""
    return os.getpid(), index_images(Dataset.open(root), image_ids, settings, workers=1)


@flow
def chunked_patch_index(root: str, chunks: list[list[str]], settings: PatchSettings) -> tuple[set[int], pd.DataFrame]:
    built = [future.result() for future in index_chunk.map(root, chunks, unmapped(settings))]
    index = pd.concat([frame for _, frame in built], ignore_index=True)
    return {pid for pid, _ in built}, assign_splits(index, settings)


def test_dask_local_cluster_builds_the_same_patch_index_as_the_local_runner(  # type: ignore[no-untyped-def]
    synthetic_dataset_factory, prefect_server: str
) -> None:
    root = str(synthetic_dataset_factory(16, 5, height=128, width=640, contrast=1.5))
    image_ids = list(Dataset.open(root).image_ids)
    chunks = [image_ids[i : i + 4] for i in range(0, len(image_ids), 4)]

    local_pids, local = chunked_patch_index.with_options(task_runner=task_runner("local", n_workers=2))(
        root, chunks, PATCHES
    )
    dask_pids, on_dask = chunked_patch_index.with_options(task_runner=task_runner("dask", n_workers=2))(
        root, chunks, PATCHES
    )

    assert local_pids == {os.getpid()}
    assert os.getpid() not in dask_pids and 1 <= len(dask_pids) <= 2  # ran in the cluster's worker processes
    pd.testing.assert_frame_equal(on_dask, local)
    whole = build_patch_index(Dataset.open(root), PATCHES, workers=2)
    pd.testing.assert_frame_equal(on_dask, whole)
    assert set(on_dask["split"]) == {"train", "val", "test"}
    assert on_dask["label"].sum() > 0
