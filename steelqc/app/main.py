"""Streamlit entry point (``steelqc app`` runs this file): settings, tracking, then one of two pages.

``steelqc app --config demo --set k=v`` passes its options to this script after ``--``; run any
other way (``streamlit run``, ``AppTest``) it uses the defaults plus ``STEELQC_*`` variables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from steelqc.app.champion import REGISTRY_ERRORS, first_line
from steelqc.app.inspect_page import render_inspect_page
from steelqc.app.qa_page import render_qa_page
from steelqc.config import ConfigError, Settings, load_settings, resolve_profile
from steelqc.quiet_start import quiet_tensorflow_start
from steelqc.tracking import TrackingUnavailableError, configure_tracking

PAGES = {"Inspect": render_inspect_page, "QA": render_qa_page}
quiet_tensorflow_start()  # the server's console shows steelqc's lines, not TensorFlow's banner


def settings_from_argv(argv: list[str]) -> Settings:
    """Settings from the script arguments ``--config NAME`` and repeated ``--set key=value``.

    Only arguments given to *this* script count (``argv[0]`` is this file under ``streamlit run``);
    under a test runner ``sys.argv`` belongs to the runner and is ignored.
    """
    if not argv or Path(argv[0]).resolve() != Path(__file__).resolve():
        return load_settings()
    parser = argparse.ArgumentParser(prog="steelqc app")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args(argv[1:])
    overrides = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return load_settings(resolve_profile(args.config), overrides)


def main() -> None:
    st.set_page_config(page_title="steelqc", page_icon=":material/factory:", layout="wide")
    page = st.sidebar.radio("Page", list(PAGES))
    try:
        settings = settings_from_argv(sys.argv)
        configure_tracking(settings)
    except (ConfigError, TrackingUnavailableError) as exc:
        st.error(str(exc))
        return
    st.sidebar.caption(f"Registry: `{settings.mlflow_tracking_uri}`")
    try:
        PAGES[page](settings)
    except REGISTRY_ERRORS as exc:
        st.error(f"Model registry error at {settings.mlflow_tracking_uri}: {first_line(exc)}")


if __name__ == "__main__":  # streamlit run and AppTest execute this file as __main__
    main()
