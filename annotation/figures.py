"""Plotly figures of the paper's unit statistics (Fig. 3 and Fig. A1b), for the app to embed."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from model.settings import DETECTOR_PRECISION

CHARACTERISTIC_COLOR = "#d62728"
OTHER_COLOR = "#1f77b4"


def _histogram_bars(histogram: Mapping[str, int], characteristic: Mapping[str, bool]) -> go.Bar:
    # Horizontal bars keep long category names readable; reversed so the commonest is on top.
    names = list(histogram)[::-1]
    starred = [characteristic.get(name, False) for name in names]
    return go.Bar(
        x=[histogram[name] for name in names],
        y=[f"{name}*" if star else name for name, star in zip(names, starred)],
        orientation="h",
        marker_color=[CHARACTERISTIC_COLOR if star else OTHER_COLOR for star in starred],
        hovertemplate="%{y}: %{x} units<extra></extra>", showlegend=False)


def count_axis(largest: int) -> dict:
    """An axis of unit counts: from 0, whole numbers only (never "2.5 detectors"); a step of 1 while
    Plotly would otherwise pick halves, its own (whole) steps above."""
    return {"rangemode": "tozero", "tickformat": "d", **({"dtick": 1} if largest <= 10 else {})}


def _detectors(n: int) -> str:
    return f"{n} detector{'' if n == 1 else 's'}"


def _bar_height(n_categories: int) -> int:
    return 120 + 22 * max(n_categories, 1)


def detector_histogram_figure(histogram: Mapping[str, int], characteristic: Mapping[str, bool],
                              title: str = "Detectors per category") -> go.Figure:
    """Fig. 3 for one run: units per category; * marks categories with a characteristic sound."""
    figure = go.Figure(_histogram_bars(histogram, characteristic))
    figure.update_layout(title=f"{title} ({_detectors(sum(histogram.values()))}; * characteristic sound)",
                         xaxis=dict(title="units", **count_axis(max(histogram.values(), default=0))),
                         height=_bar_height(len(histogram)),
                         margin=dict(l=10, r=10, t=50, b=40))
    return figure


def detector_histograms_figure(histograms: Mapping[str, Mapping[str, int]],
                               characteristic: Mapping[str, bool]) -> go.Figure:
    """Fig. 3 for several runs side by side, one panel per run (keyed by run name)."""
    if not histograms:
        raise ValueError("no runs to compare")
    from plotly.subplots import make_subplots     # 0.05 s to import: not at the web app's start

    runs = list(histograms)
    figure = make_subplots(rows=1, cols=len(runs), horizontal_spacing=0.12,
                           subplot_titles=[f"{run} ({_detectors(sum(histograms[run].values()))})"
                                           for run in runs])
    for col, run in enumerate(runs, start=1):
        figure.add_trace(_histogram_bars(histograms[run], characteristic), row=1, col=col)
        figure.update_xaxes(title_text="units", row=1, col=col,
                            **count_axis(max(histograms[run].values(), default=0)))
    figure.update_layout(title="Detectors per category (* characteristic sound)",
                         height=_bar_height(max(len(h) for h in histograms.values())),
                         margin=dict(l=10, r=10, t=70, b=40))
    return figure


def threshold_curve_figure(thresholds: Sequence[float], counts_by_run: Mapping[str, Sequence[int]],
                           chosen: float = DETECTOR_PRECISION) -> go.Figure:
    """Fig. A1b: detectors as the threshold varies, one line per run, the chosen threshold marked."""
    figure = go.Figure()
    largest = max((max(counts, default=0) for counts in counts_by_run.values()), default=0)
    for run, counts in counts_by_run.items():
        if len(counts) != len(thresholds):
            raise ValueError(f"run {run!r}: {len(counts)} counts for {len(thresholds)} thresholds")
        figure.add_trace(go.Scatter(x=list(thresholds), y=list(counts), mode="lines+markers", name=run))
    figure.add_vline(x=chosen, line_dash="dash", line_color="gray",
                     annotation_text=f"{chosen:.0%}", annotation_position="top")
    figure.update_layout(title="Object-selective units vs. threshold",
                         xaxis=dict(title="fraction of top images containing the object",
                                    tickformat=".0%"),
                         yaxis=dict(title="detectors", **count_axis(largest)),
                         height=450, margin=dict(l=10, r=10, t=50, b=40))
    return figure


def emergence_figure(steps: Sequence[Mapping], title: str = "When the detectors emerge") -> go.Figure:
    """Detectors (total, sounding, silent) and held-out accuracy against training step, from the
    ``steps`` of RUN_DIR/emergence.json (``ambient dissect --checkpoints``)."""
    from plotly.subplots import make_subplots     # 0.05 s to import: not at the web app's start

    figure = make_subplots(specs=[[{"secondary_y": True}]])
    x = [s["step"] for s in steps]
    for key, name, color in (("total", "detectors", "#333333"), ("sounding", "sounding-category detectors",
                                                                 CHARACTERISTIC_COLOR),
                             ("silent", "silent-category detectors", OTHER_COLOR)):
        figure.add_trace(go.Scatter(x=x, y=[s["detectors"][key] for s in steps], name=name, mode="lines+markers",
                                    line={"color": color}), secondary_y=False)
    figure.add_trace(go.Scatter(x=x, y=[s["accuracy"] for s in steps], name="held-out accuracy",
                                mode="lines+markers", line={"color": "#2ca02c", "dash": "dot"}), secondary_y=True)
    largest = max((s["detectors"]["total"] for s in steps), default=0)
    figure.update_layout(title=title, height=380, margin={"l": 60, "r": 60, "t": 60, "b": 50},
                         legend={"orientation": "h", "y": -0.25})
    figure.update_xaxes(title_text="training step")
    figure.update_yaxes(title_text="detectors (precision >= %d%%)" % round(100 * DETECTOR_PRECISION),
                        secondary_y=False, **count_axis(largest))
    figure.update_yaxes(title_text="held-out accuracy", tickformat=".0%", rangemode="tozero", secondary_y=True)
    return figure
