"""kit.plots: one colour per name in every notebook; shared symmetric-log axes; trade-off scales."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import kit  # noqa: E402
from kit import objectives, plots  # noqa: E402
from kit.attribution import METHODS  # noqa: E402


@pytest.fixture
def figure():
    fig, axes = plt.subplots(1, 2)
    yield fig, axes
    plt.close(fig)


def test_every_objective_and_method_has_its_own_colour():
    for names in (list(objectives.OBJECTIVES), [*METHODS, "lora"], ["ga", "gd", "ga+kl", "npo", "npo+nll", "wga"]):
        colours = [plots.color(n) for n in names]
        assert len(set(colours)) == len(colours), dict(zip(names, colours))
    assert plots.color("NPO") == plots.color("npo") and plots.color("wagle 80%") == plots.color("wagle")
    assert plots.color("my-objective") == plots.color("my-objective")          # stable for unknown names
    assert plots.palette(["ga", "npo", "ga"]) == {"ga": plots.color("ga"), "npo": plots.color("npo")}


def test_groups_get_an_ordered_scale_and_cross_terms_grey():
    pal = plots.group_palette(["embed", "shallow", "middle", "deep", "lm", "tied_cross"])
    assert len(set(pal.values())) == len(pal) and pal["tied_cross"] == "#9e9e9e"


def test_symlog_shares_limits_and_keeps_three_decades(figure):
    fig, axes = figure
    plots.symlog(axes, [-250.0, 0.3, 40.0])
    assert axes[0].get_ylim() == axes[1].get_ylim() and axes[0].get_yscale() == "symlog"
    low, high = axes[0].get_ylim()
    assert low <= -250 and high >= 40
    assert axes[0].yaxis.get_transform().linthresh == pytest.approx(0.2)      # just below the smallest |value|, 0.3
    plots.symlog(axes, [-250.0, 1e-6, 40.0])
    assert axes[0].yaxis.get_transform().linthresh == pytest.approx(0.1)      # 100 -> three decades below: 0.1
    assert axes[0].get_ylim() == (-1000.0, 100.0)                             # wide: out to the next decades
    assert {-1000.0, 100.0} <= set(axes[0].get_yticks())                       # ... which carry ticks


def test_nll_axes_are_log_with_readable_ticks_at_any_range(figure):
    _, (ax, _) = figure
    ax.plot([0.1, 0.5, 2.0], [2.3, 2.4, 2.6])
    kit.nll_axes(ax, [0.1, 0.5, 2.0], [2.3, 2.4, 2.6])     # forget spans 20x, retain 1.1x
    assert ax.get_xscale() == ax.get_yscale() == "log"      # the same look for every trade-off plot
    low, high = ax.get_ylim()
    inside = [t for t in ax.get_yticks() if low <= t <= high]
    assert len(inside) >= 3, inside                         # a short range still gets labelled ticks
    fig = ax.figure
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in t for t in labels)   # plain numbers


@pytest.mark.parametrize("span", [(2.3, 2.6), (3.5, 11.0), (4.0, 19.0), (0.1, 2.0), (0.02, 30.0), (1.12, 4.311)])
def test_log_axis_labels_at_least_three_ticks_at_any_span(figure, span):
    _, (ax, _) = figure
    ax.plot([1, 2], span)
    plots.log_axis(ax.yaxis, span)
    low, high = ax.get_ylim()
    assert len([t for t in ax.get_yticks() if low <= t <= high]) >= 3, (span, ax.get_yticks())


def test_symlog_leaves_no_empty_decades_below_the_data(figure):
    _, (ax, _) = figure
    plots.symlog(ax, [-0.5, -0.3, -0.15], axis="x")          # one sign, within a decade
    assert ax.xaxis.get_transform().linthresh == pytest.approx(0.1)
    assert min(abs(t) for t in ax.get_xticks() if t) >= 0.1                # no ticks crowding the empty band
    low, high = ax.get_xlim()
    assert low <= -0.5 and high == 0.0
    ax.figure.canvas.draw()
    labelled = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and -0.5 <= t.get_position()[0] <= -0.15]
    assert len(labelled) >= 2, labelled                     # the data's own range carries labels


@pytest.mark.parametrize("top", [9.5e6, 2.0, 0.03])
def test_symlog_heatmap_labels_zero_and_powers_of_ten_outside_the_linear_band(figure, top):
    import pandas as pd
    _, (ax, _) = figure
    bar = plots.symlog_heatmap(pd.DataFrame([[-top, 0.5 * top], [top / 7, 0.0]]), ax, label="e_u")
    norm, ticks = bar.norm, list(bar.get_ticks())
    assert norm.vmin == -top and norm.vmax == top and norm.linthresh == pytest.approx(top / 1000)
    assert 0.0 in ticks and ticks == sorted(ticks) and ticks == [-t for t in reversed(ticks)]
    outside = [t for t in ticks if t]
    assert outside and all(norm.linthresh <= abs(t) <= top for t in outside) and len(outside) <= 8
    assert max(outside) == pytest.approx(10 ** math.floor(math.log10(top)))     # the largest decade is labelled
    assert not len(bar.ax.yaxis.get_minorticklocs())                           # nothing crowds the middle


def test_names_that_share_a_colour_get_distinct_shades_of_it():
    names = ["gd"] + [f"gd {m}" for m in ("wagle", "magnitude", "random", "lora", "wanda", "gradient")] + ["npo", "npo lora"]
    shades = plots.palette(names)
    assert len(set(shades.values())) == len(names)                  # a legend tells every run apart
    assert shades["gd"] == plots.color("gd") and shades["npo"] == plots.color("npo")   # the first keeps its own colour
    assert plots.palette(["ga", "npo", "gd"]) == {n: plots.color(n) for n in ("ga", "npo", "gd")}
