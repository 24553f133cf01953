"""Visualisation: HTML token heat maps (`jaxattr.viz.html.render_report`)."""
