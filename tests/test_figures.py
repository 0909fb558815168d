import pytest

from annotation.figures import (CHARACTERISTIC_COLOR, detector_histogram_figure,
                                detector_histograms_figure, threshold_curve_figure)

CHARACTERISTIC = {"person": True, "baby": True, "tree": False}


def test_histogram_stars_characteristic_categories_commonest_on_top():
    figure = detector_histogram_figure({"person": 5, "tree": 3, "baby": 1}, CHARACTERISTIC)
    bars = figure.data[0]
    assert list(bars.y) == ["baby*", "tree", "person*"]     # plotly draws the last bar on top
    assert list(bars.x) == [1, 3, 5]
    assert bars.marker.color[0] == CHARACTERISTIC_COLOR and bars.marker.color[1] != CHARACTERISTIC_COLOR
    assert "9 detectors" in figure.layout.title.text
    html = figure.to_html(full_html=False, include_plotlyjs=False)
    assert "<script" in html and "person*" in html


def test_side_by_side_histograms_one_panel_per_run():
    figure = detector_histograms_figure({"sound": {"person": 4}, "places": {"tree": 2, "baby": 1}},
                                        CHARACTERISTIC)
    assert len(figure.data) == 2
    assert [trace.xaxis for trace in figure.data] == ["x", "x2"]
    assert [a.text for a in figure.layout.annotations] == ["sound (4 detectors)", "places (3 detectors)"]
    with pytest.raises(ValueError):
        detector_histograms_figure({}, CHARACTERISTIC)


def test_threshold_curve_one_line_per_run():
    thresholds = [0.5, 0.6, 0.7]
    figure = threshold_curve_figure(thresholds, {"sound": [10, 8, 3], "places": [12, 9, 4]})
    assert [trace.name for trace in figure.data] == ["sound", "places"]
    assert list(figure.data[1].y) == [12, 9, 4]
    assert figure.layout.shapes[0].x0 == 0.6                 # the chosen threshold is marked
    with pytest.raises(ValueError, match="sound"):
        threshold_curve_figure(thresholds, {"sound": [1, 2]})


def test_count_axes_are_whole_numbers_from_zero():
    """A run with 2 detectors must not show 0.5 or 2.5 detectors on its axis."""
    few = detector_histogram_figure({"person": 2, "tree": 1}, CHARACTERISTIC).layout.xaxis
    assert (few.dtick, few.tickformat, few.rangemode) == (1, "d", "tozero")
    side_by_side = detector_histograms_figure({"sound": {"person": 3}, "places": {"tree": 40}}, CHARACTERISTIC)
    assert (side_by_side.layout.xaxis.dtick, side_by_side.layout.xaxis2.dtick) == (1, None)   # 40: plotly's whole steps
    assert side_by_side.layout.xaxis2.tickformat == "d"
    curve = threshold_curve_figure([0.5, 0.6], {"sound": [3, 1]}).layout.yaxis
    assert (curve.dtick, curve.tickformat, curve.rangemode) == (1, "d", "tozero")
    assert "(1 detector;" in detector_histogram_figure({"tree": 1}, CHARACTERISTIC).layout.title.text
