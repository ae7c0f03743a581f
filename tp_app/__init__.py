"""Streamlit glue for TaskPrune Studio (the pages are in ../pages)."""
