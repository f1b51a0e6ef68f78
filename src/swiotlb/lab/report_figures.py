"""The figures of ``swiotlb report``: matplotlib (Agg) drawn straight to SVG text.

No pyplot, so no global figure state and no GUI backend. Output is deterministic: no metadata
block (date, creator), a fixed hash salt, and every ``id`` in an SVG prefixed with its figure's
id so that many SVGs inlined in one page never share one. Text stays text (``svg.fonttype``
none), which keeps each SVG small. The heat map is the one raster, embedded as a PNG.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from swiotlb.core.constants import IO_TLB_SIZE

MIB = 1 << 20
SVG_RC: dict[Any, Any] = {"svg.hashsalt": "swiotlb-report", "svg.fonttype": "none", "font.size": 9.0,
          "axes.grid": True, "grid.alpha": 0.3}

_STYLES: dict[str, tuple[str, str]] = {
    "static": ("#1f77b4", "-"),
    "linux-6.6": ("#d62728", "--"),
    "adaptive": ("#2ca02c", "-"),
    "rfc-v1": ("#9467bd", "-."),
    "lending": ("#ff7f0e", ":"),
}
_MORE = [("#8c564b", "-"), ("#e377c2", "--"), ("#7f7f7f", "-."), ("#bcbd22", ":"), ("#17becf", "-")]


@dataclass(frozen=True)
class Run:
    """One policy's run of a scenario: its record and, if recorded, its occupancy map
    (grid times x bins, per mille used, NaN where a bin had no slots)."""

    policy: str
    record: dict[str, Any]
    occupancy: NDArray[np.float64] | None = None

    @property
    def series(self) -> dict[str, Any]:
        ts: dict[str, Any] = self.record.get("time_series") or {}
        return ts

    def column(self, name: str) -> NDArray[np.float64] | None:
        """A time-series column as floats, or None when the record lacks it."""
        values = self.series.get(name)
        return None if values is None else np.asarray(values, dtype=np.float64)


def style(policy: str, index: int) -> dict[str, Any]:
    """A fixed colour and line style per policy, so that every figure of the page agrees; line
    styles differ too, so that runs with equal values stay visible on top of each other."""
    color, dash = _STYLES.get(policy, _MORE[index % len(_MORE)])
    return {"color": color, "linestyle": dash, "linewidth": 2.2 if policy == "adaptive" else 1.5}


def time_unit(end_ns: int) -> tuple[str, float]:
    """``(unit, ns per unit)`` for a time axis: seconds for runs of 10 s or more, else ms."""
    return ("s", 1e9) if end_ns >= 10 * 10**9 else ("ms", 1e6)


def to_svg(fig: Any, figure_id: str) -> str:
    """The figure as an ``<svg>`` element, every id made unique with ``figure_id``."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(SVG_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):].rstrip()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # creator, licence URIs
    prefix = figure_id + "-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{prefix}{m.group(2)}", text)
    return text


def _figure(width: float, height: float) -> Any:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(SVG_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _axes(fig: Any, n: int) -> list[Any]:
    import matplotlib

    with matplotlib.rc_context(SVG_RC):
        axes = fig.subplots(1, n, sharex=True, squeeze=False)[0]
    return list(axes)


def _legend(fig: Any, axes: Sequence[Any]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="policy")


def _lines(fig: Any, runs: Sequence[Run], panels: Sequence[tuple[str, str, Any]], end_ns: int) -> None:
    """One panel per ``(title, y label, values of a run or None)``, a line per run, against time."""
    unit, scale = time_unit(end_ns)
    axes = _axes(fig, len(panels))
    for ax, (title, ylabel, values_of) in zip(axes, panels):
        drawn = False
        for i, run in enumerate(runs):
            t, y = run.column("t_ns"), values_of(run)
            if t is None or y is None:
                continue
            ax.plot(t / scale, y, drawstyle="steps-post", label=run.policy, **style(run.policy, i))
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(title)
        ax.set_xlabel(f"time ({unit})")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, end_ns / scale)
        ax.set_ylim(bottom=0)
        _, top = ax.get_ylim()
        if top < 1:
            ax.set_ylim(0, 1)
    _legend(fig, axes)


def byte_unit(largest: float) -> tuple[str, float]:
    """``(unit, bytes per unit)`` that keeps ``largest`` readable: GiB, MiB or KiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB)):
        if largest >= 2 * size:
            return unit, float(size)
    return ("MiB", float(MIB)) if largest >= MIB else ("KiB", 1024.0)


def footprint_figure(runs: Sequence[Run], end_ns: int) -> Any:
    """Bytes reserved for bouncing, and bytes of it in use, over time."""
    fig = _figure(10.5, 3.4)
    panels = []
    for title, name in (("reserved for bouncing", "reserved_bytes"), ("in use by mappings", "in_use_bytes")):
        cols = [c for c in (r.column(name) for r in runs) if c is not None and len(c)]
        unit, size = byte_unit(max((float(c.max()) for c in cols), default=0.0))

        def of(run: Run, name: str = name, size: float = size) -> Any:
            col = run.column(name)
            return None if col is None else col / size

        panels.append((title, unit, of))
    _lines(fig, runs, panels, end_ns)
    return fig


def failures_figure(runs: Sequence[Run], end_ns: int) -> Any:
    """Failed and deferred maps so far, over time."""
    fig = _figure(10.5, 3.2)
    _lines(fig, runs, [("failed maps (all causes), cumulative", "maps", lambda r: r.column("failed_maps")),
                       ("deferred maps, cumulative", "maps", lambda r: r.column("deferred_maps"))], end_ns)
    for ax in fig.axes[:2]:
        ax.yaxis.get_major_locator().set_params(integer=True)
    return fig


def fragmentation_figure(runs: Sequence[Run], end_ns: int) -> Any:
    """Pool occupancy, number of free runs and the longest free run, over time."""
    fig = _figure(10.5, 3.2)

    def occupancy(run: Run) -> Any:
        used, total, transient = run.column("used_slots"), run.column("total_slots"), run.column("transient_slots")
        if used is None or total is None or transient is None:
            return None
        slots = total + transient
        return np.divide(used * 100, slots, out=np.full_like(used, np.nan), where=slots > 0)

    def longest(run: Run) -> Any:
        col = run.column("largest_free_run")
        return None if col is None else col * (IO_TLB_SIZE / 1024)

    _lines(fig, runs, [("pool slots in use", "% of slots", occupancy),
                       ("free runs in the standing pools", "runs", lambda r: r.column("free_runs")),
                       ("longest free run", "KiB", longest)], end_ns)
    return fig


def _ns_label(x: float, _pos: object = None) -> str:
    if x <= 0:
        return "0"
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if x >= size:
            return f"{x / size:g} {unit}"
    return f"{x:g} ns"


def map_cost_figure(runs: Sequence[Run]) -> Any:
    """The distribution of the modelled CPU time per map, from the log2 histogram."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    fig = _figure(10.5, 3.4)
    [ax] = _axes(fig, 1)
    top = 1
    drawn = False
    for i, run in enumerate(runs):
        hist = run.record.get("map_ns_hist")
        if not hist or not sum(hist):
            continue
        drawn = True
        shares = np.asarray(hist, dtype=np.float64) * 100 / sum(hist)
        edges = np.asarray([0] + [1 << k for k in range(len(hist))], dtype=np.float64)
        ax.stairs(shares, edges, label=run.policy, **style(run.policy, i))
        top = max(top, len(hist))
    if not drawn:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center")
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ax.set_xlim(0, 1 << top)
    ax.xaxis.set_major_locator(FixedLocator([0] + [10.0**k for k in range(0, len(str(1 << top)))]))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.xaxis.set_major_formatter(FuncFormatter(_ns_label))
    ax.set_ylim(0, 100)
    ax.set_title("modelled CPU time per map (buckets [2^(k-1), 2^k) ns; 0 = no slot work)")
    ax.set_xlabel("modelled CPU time per map (ns, log scale)")
    ax.set_ylabel("% of maps")
    _legend(fig, [ax])
    return fig


def occupancy_figure(run: Run, end_ns: int, rows: int = 160) -> Any:
    """Where in the standing pools the used slots lie, over time: a heat map.

    The record holds, per grid time, the used share of each of ``bins`` equal bins of the
    pools' slots (the pools in address order). The y axis is the offset into those pools in
    MiB, up to the most the run ever had, so the grey band above a column is memory the
    policy did not hold then. Each pixel row takes the bin holding its centre.
    """
    import matplotlib

    assert run.occupancy is not None
    fig = _figure(5.2, 2.8)
    [ax] = _axes(fig, 1)
    unit, scale = time_unit(end_ns)
    t, total = run.column("t_ns"), run.column("total_slots")
    assert t is not None and total is not None
    grid = run.occupancy  # (times, bins), per mille, NaN = no slots
    bins = grid.shape[1]
    ymax = float(total.max()) if len(total) else 0.0
    ax.set_title(run.policy)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("offset in the pools (MiB)")
    if ymax <= 0:
        ax.text(0.5, 0.5, "no standing pool in this run", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlim(0, end_ns / scale)
        return fig
    centres = (np.arange(rows) + 0.5) * ymax / rows  # in slots
    safe = np.where(total > 0, total, 1.0)
    which = np.floor(centres[:, None] * bins / safe[None, :]).astype(np.int64)  # (rows, times)
    inside = (centres[:, None] < total[None, :]) & (which < bins)
    image = np.full((rows, len(t)), np.nan)
    cols = np.broadcast_to(np.arange(len(t))[None, :], which.shape)
    image[inside] = grid[cols[inside], which[inside]] / 10
    step = float(run.series.get("step_ns", 1))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e4e4e4")
    with matplotlib.rc_context(SVG_RC):
        im = ax.imshow(np.ma.masked_invalid(image), origin="lower", aspect="auto", interpolation="nearest",
                       cmap=cmap, vmin=0, vmax=100,
                       extent=(float(t[0] - step / 2) / scale, float(t[-1] + step / 2) / scale,
                               0, ymax * IO_TLB_SIZE / MIB))
        fig.colorbar(im, ax=ax, label="slots in use (%)")
    ax.grid(False)
    ax.set_xlim(0, end_ns / scale)
    return fig
