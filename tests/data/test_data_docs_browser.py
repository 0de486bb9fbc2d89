"""GX Data Docs open offline: headless Chromium with networking disabled shows the validation table."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from steelqc.config import ValidationSettings
from steelqc.data.dataset import LABELS_FILE, Dataset
from steelqc.validation import validate_dataset

from browser import CHROMIUM, chromium_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (`make system-deps` installs it)"),
]


def _table_rows(tools, timeout: float = 30) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """The cells of the index page's validation table, once the page has loaded."""
    deadline = time.monotonic() + timeout
    rows: list[list[str]] = []
    while time.monotonic() < deadline and not rows:
        time.sleep(0.5)
        rows = tools.evaluate(
            "document.readyState === 'complete' ? Array.from(document.querySelectorAll('table')[0]?.rows ?? [])"
            ".map(r => Array.from(r.cells).map(c => c.innerText.trim())) : []"
        ) or []
    return rows


def test_data_docs_index_shows_the_validation_table_offline(synthetic_dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    first_image = Dataset.open(str(data)).image_ids[0]
    with (data / LABELS_FILE).open("a") as labels:
        labels.write(f"{first_image},2,10 5 12 5\n")  # overlapping runs: the labels suite fails on this row
    result = validate_dataset(Dataset.open(str(data)), ValidationSettings(), tmp_path / "report", mode="fail")
    assert not result.success

    with chromium_page(tmp_path / "chromium", offline=True) as tools:
        tools.call("Page.navigate", url=result.docs_index.as_uri())
        rows = _table_rows(tools)
        text = tools.text()
        requested = [e["params"]["request"]["url"] for e in tools.events if e["method"] == "Network.requestWillBeSent"]

    header, body = rows[0], rows[1:]
    assert header[:3] == ["Status", "Run Time", "Run Name"], rows
    by_suite = {row[header.index("Asset Name")]: row for row in body}
    assert set(by_suite) == {"labels", "images", "dataset"}, rows
    assert by_suite["labels"][0] == "Failed" and by_suite["images"][0] == "Success"
    run_names = {row[2] for row in body}
    name = Dataset.open(str(data)).meta.name
    assert run_names == {f"{name}-fail-{result.input_hash[:12]}"}, run_names  # dataset, mode and input, not __none__
    assert "__none__" not in text
    assert [url for url in requested if not url.startswith("file://")] == []  # nothing from the internet
