"""Streamlit app: the Inspect page for operators and the QA page for the QA lead (``steelqc app``)."""
