"""The kit's figure style: one colour per objective, selection method and regulariser in every
notebook, and the axis scales the G-effect and the trade-off plots need.

    from kit import plots
    plots.style()                                          # once, in a notebook's import cell
    sns.lineplot(..., hue="objective", palette=plots.palette(OBJECTIVES))
    plots.symlog(axes, values)                             # shared symmetric-log y axis
"""
from __future__ import annotations

import zlib

import numpy as np

# Families share a hue: gradient ascent and its regularised forms red-brown, NPO and its relatives
# blues and purples, weighted likelihoods greens, preference objectives teal and brick, RMU grey.
COLORS = {
    # objectives (kit.objectives) and their regularised forms
    "ga": "#d62728", "gd": "#ff7f0e", "ga+nll": "#ff7f0e", "ga+kl": "#8c564b",
    "npo": "#1f77b4", "npo+nll": "#17becf", "npo+kl": "#6baed6", "simnpo": "#393b79",
    "tnpo": "#9467bd", "wtnpo": "#e377c2",
    "wga": "#2ca02c", "satimp": "#bcbd22", "undial": "#8c6d31",
    "po": "#008b8b", "idkdpo": "#843c39", "rmu": "#636363",
    # weight selection (kit.attribution) and the references of a benchmark table
    "wagle": "#d62728", "gradient": "#ff7f0e", "magnitude": "#1f77b4", "random": "#7f7f7f",
    "wanda": "#2ca02c", "dense": "#000000", "lora": "#9467bd",
    "target": "#000000", "retain model": "#555555",
    # retain regularisers (notebook 07)
    "none": "#d62728", "nll": "#ff7f0e", "kl": "#8c564b",      # GA alone, GA+NLL (= GD), GA+KL: their objectives' colours
}
_GROUPS = ["#54278f", "#2c7fb8", "#31a354", "#fe9929", "#d7301f"]   # embed -> lm: purple, blue, green, orange, red
_SPARE = ["#e7ba52", "#843c39", "#5254a3", "#637939", "#d6616b", "#3182bd", "#31a354", "#756bb1"]


def color(name: str) -> str:
    """The colour of an objective, selection method or regulariser (any other name gets a
    stable colour of its own, the same in every notebook)."""
    key = str(name).lower()
    if key in COLORS:
        return COLORS[key]
    base = key.split(" ")[0].split("@")[0]          # "wagle 80%" -> wagle's colour
    return COLORS.get(base, _SPARE[zlib.crc32(key.encode()) % len(_SPARE)])


def palette(names) -> dict[str, str]:
    """{name: colour} for seaborn's `palette=`. Names that would share a colour ("npo",
    "npo wagle", "npo lora": one objective under several selections) get shades of it, the first
    its own colour, the next ones alternately darker and lighter, so a legend tells them apart."""
    import matplotlib.colors as mcolors
    out = {n: color(n) for n in dict.fromkeys(names)}
    shared: dict[str, list] = {}
    for n, c in out.items():
        shared.setdefault(c, []).append(n)
    for c, members in shared.items():
        rgb = np.array(mcolors.to_rgb(c))
        for i, n in enumerate(members[1:], 1):
            amount = (0.3, 0.6, 0.15, 0.45, 0.75)[(i - 1) // 2 % 5]         # towards black or white
            towards = np.zeros(3) if i % 2 else np.ones(3)                 # darker, lighter, darker, ...
            out[n] = mcolors.to_hex(rgb + (towards - rgb) * amount)
    return out


def group_palette(groups) -> dict[str, str]:
    """{group: colour} for parameter groups in network order (kit.geffect.group_order): the
    paper's five groups get five distinct hues from purple (embeddings) to red (head), finer
    schemes a continuous scale; `tied_cross`, the cross terms of a tied embedding, is grey."""
    import matplotlib as mpl
    ordered = [g for g in dict.fromkeys(groups) if g not in ("tied_cross", "total")]
    if len(ordered) <= len(_GROUPS):     # the paper's five groups: distinct hues in network order
        picks = np.linspace(0, len(_GROUPS) - 1, len(ordered)).round().astype(int) if len(ordered) > 1 else [0]
        out = {g: _GROUPS[i] for g, i in zip(ordered, picks)}
    else:                                # one colour per block: a continuous scale
        cmap = mpl.colormaps["turbo"]
        out = {g: mpl.colors.to_hex(cmap(0.05 + 0.9 * i / (len(ordered) - 1))) for i, g in enumerate(ordered)}
    return {**out, "tied_cross": "#9e9e9e", "total": "#000000"}


def style() -> None:
    """The kit's seaborn theme: white grid, titles that fit a two-panel row."""
    import matplotlib as mpl
    import seaborn as sns
    sns.set_theme(style="whitegrid")
    mpl.rcParams.update({"axes.titlesize": 11, "axes.titleweight": "bold", "legend.fontsize": 9,
                         "figure.titlesize": 12, "figure.titleweight": "bold"})


def symlog(axes, values, axis: str = "y", decades: int = 3) -> None:
    """A symmetric-log scale shared by `axes` (one Axes or many), fitted to `values`.

    The linear band around 0 ends `decades` decades below the largest |value|, or just below the
    smallest non-zero |value| (at 1, 2 or 5 times a power of 10) where that is higher, so the log
    part shows the decades the data occupy instead of crowding ticks near 0; every axis gets the
    same limits and ticks, so panels compare at a glance. Over more than two decades the axis ends
    at the next power of 10 beyond the data, so its extremes can be read off a labelled tick.
    """
    import matplotlib.ticker as mticker
    axes = list(np.atleast_1d(axes).ravel())
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    top = float(np.abs(v).max()) if v.size else 1.0
    top = top if top > 0 else 1.0
    linthresh = 10 ** (np.floor(np.log10(top)) - decades)
    nonzero = np.abs(v[v != 0])
    if nonzero.size:                    # 1, 2 or 5 times a power of 10, at or below the smallest |value|
        smallest = nonzero.min()
        power = 10 ** np.floor(np.log10(smallest))
        linthresh = max(linthresh, max(m * power for m in (1, 2, 5) if m * power <= smallest * (1 + 1e-9)))
    low = min(float(v.min()), 0.0) if v.size else -top
    high = max(float(v.max()), 0.0) if v.size else top
    narrow = top < 100 * linthresh          # within two decades: plain numbers, 1-2-5 (one decade) or 1-3 ticks

    def pad(x):                             # wider: out to the next decade, so both ends carry a labelled tick
        if abs(x) <= linthresh:
            return np.sign(x) * linthresh if x else 0.0
        return x * 1.6 if narrow else np.sign(x) * 10 ** np.ceil(np.log10(abs(x)) - 1e-9)
    lim = (pad(low), pad(high))
    subs = [1.0, 2.0, 5.0] if top < 10 * linthresh else [1.0, 3.0] if narrow else [1.0]
    locator = mticker.SymmetricalLogLocator(linthresh=linthresh, base=10, subs=subs)
    ticks = [t for t in locator.tick_values(*lim) if t == 0 or abs(t) >= linthresh * (1 - 1e-9)]   # none inside the band
    for ax in axes:
        set_scale, set_lim = (ax.set_yscale, ax.set_ylim) if axis == "y" else (ax.set_xscale, ax.set_xlim)
        set_scale("symlog", linthresh=linthresh, linscale=0.5)
        set_lim(*lim)
        target = ax.yaxis if axis == "y" else ax.xaxis
        target.set_major_locator(mticker.FixedLocator(ticks))
        if narrow:
            target.set_major_formatter(mticker.FormatStrFormatter("%g"))
        target.set_minor_locator(mticker.NullLocator())
        ax.axhline(0, color="black", lw=0.8) if axis == "y" else ax.axvline(0, color="black", lw=0.8)


def symlog_heatmap(grid, ax, cmap: str = "RdYlGn", label: str = "", decades: int = 3, fmt: str = ".3g"):
    """A heat map of `grid` (a DataFrame) on a symmetric-log colour scale, its values written in.

    The colours are linear within `decades` decades below the largest |value|; the colour bar is
    labelled at 0 and at powers of 10 outside that band (at most four a side, no minor ticks), so
    no labels crowd its middle. Returns the colour bar."""
    import matplotlib.colors as mcolors
    import seaborn as sns
    v = np.abs(np.asarray(grid, dtype=float).ravel())
    v = v[np.isfinite(v)]
    top = float(v.max()) if v.size and v.max() > 0 else 1.0
    linthresh = top / 10 ** decades
    powers = [10.0 ** k for k in range(int(np.ceil(np.log10(linthresh) - 1e-9)), int(np.floor(np.log10(top) + 1e-9)) + 1)]
    powers = powers[::-1][::-(-len(powers) // 4) or 1][::-1]          # thinned from the top: the largest is kept
    ticks = [-p for p in reversed(powers)] + [0.0] + powers
    norm = mcolors.SymLogNorm(linthresh=linthresh, vmin=-top, vmax=top)
    sns.heatmap(grid, annot=True, fmt=fmt, cmap=cmap, norm=norm, ax=ax, cbar_kws={"label": label, "ticks": ticks})
    bar = ax.collections[-1].colorbar           # the heat map just drawn
    bar.minorticks_off()
    return bar


def log_axis(axis, values) -> None:
    """A log scale on one axis (`ax.xaxis` or `ax.yaxis`), labelled in plain numbers whatever the
    range: up to two decades, 1, 2, 3 and 5 times each power of 10, or about five evenly spaced
    ticks where those would give fewer than three labels (a range within a factor of about 5);
    wider, the decades only."""
    import matplotlib.ticker as mticker
    values = np.asarray([v for v in np.ravel(values) if np.isfinite(v) and v > 0], dtype=float)
    if not values.size:
        return
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    lo, hi = values.min(), values.max()
    axis.axes.autoscale_view()
    shown = sorted(axis.get_view_interval())        # the ticks counted are those the axis will show
    low, high = (shown if 0 < shown[0] <= lo and hi <= shown[1] else (lo / 1.15, hi * 1.15))

    def inside(ticks):
        return [t for t in ticks if max(low, lo / 1.15) <= t <= min(high, hi * 1.15) and t > 0]

    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    nice = inside(m * 10.0 ** k for k in decades for m in (1, 2, 3, 5))
    if hi < 100 * lo:
        even = len(nice) < 3
        axis.set_major_locator(mticker.FixedLocator(inside(mticker.MaxNLocator(nbins=5).tick_values(lo, hi)) if even else nice))
        axis.set_minor_locator(mticker.NullLocator())
    else:
        axis.set_major_locator(mticker.LogLocator(base=10))
        axis.set_minor_locator(mticker.LogLocator(base=10, subs=(2, 5)))
        axis.set_minor_formatter(mticker.NullFormatter())
    axis.set_major_formatter(mticker.FormatStrFormatter("%g"))


def nll_axes(ax, x, y) -> None:
    """Log axes for a trade-off plot (forget NLL against retain NLL), ticks as in `log_axis`: every
    trade-off plot of the kit looks the same, however far a run went."""
    log_axis(ax.xaxis, x)
    log_axis(ax.yaxis, y)
