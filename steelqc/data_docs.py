"""Great Expectations Data Docs that open offline: GX's page views with steelqc's templates searched first.

GX's stock pages load Bootstrap, jQuery and bootstrap-table from CDNs and fill the index table in the
browser, so without internet the index is blank. GX lets a site name its own view classes (the ``view`` of
the index builder and of each section builder); these views put ``steelqc/data_docs_templates`` before
GX's templates. Those render tables on the server, replace script-driven collapses with ``<details>``,
and carry the little CSS the pages need, so nothing is fetched from the internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BaseLoader, ChoiceLoader, PackageLoader

TEMPLATES_DIR = "data_docs_templates"


def _offline_first(loader: BaseLoader | None) -> ChoiceLoader:
    """steelqc's templates, then whatever the view had (GX's templates and styles)."""
    return ChoiceLoader([PackageLoader("steelqc", TEMPLATES_DIR), *([loader] if loader is not None else [])])


class OfflinePageView(DefaultJinjaPageView):
    """Validation-result and suite pages without CDN assets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.loader = _offline_first(self.env.loader)


class OfflineIndexPageView(DefaultJinjaIndexPageView):
    """The index page, its tables rendered on the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.loader = _offline_first(self.env.loader)


def _view(cls: type) -> dict[str, str]:
    return {"module_name": __name__, "class_name": cls.__name__}


def offline_site(docs_dir: Path) -> dict[str, Any]:
    """A GX ``data_docs_sites`` entry writing offline pages to ``docs_dir``."""
    page = _view(OfflinePageView)
    return {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": _view(OfflineIndexPageView)},
        "site_section_builders": {"expectations": {"view": page}, "validations": {"view": page}},
    }
