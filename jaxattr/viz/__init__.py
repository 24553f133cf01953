"""Visualisation: HTML word/token heat maps (`render_report`, `write_report`; `show` in a notebook)."""

from jaxattr.viz.html import AttributionView, render_report, show, write_report

__all__ = ["AttributionView", "render_report", "show", "write_report"]
