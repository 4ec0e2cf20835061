"""``--plot FILE``: a run's report drawn with matplotlib (the ``plot`` extra), PNG or SVG.

A row of two panels per load: server CPU per request, and requests per second, a bar per
implementation (the same colour in every panel, the same place even where it did not run), the
floor's C servers as lines across the panel, the interpreter, its GIL and the machine in the
title. matplotlib is imported only here, and only when a plot is asked for.
"""

import os

from .loads import FLOORS, IMPL_LABELS, BenchError

FORMATS = (".png", ".svg")
INSTALL_HINT = "pip install 'fastserver[plot]' (or pip install matplotlib)"
FLOOR_STYLES = {"c-threads": "--", "c-loop": ":"}


def check_plot_path(path):
    """BenchError unless ``path`` ends in .png or .svg and matplotlib can be imported."""
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise BenchError(f"--plot: {path!r} must end in .png or .svg")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"--plot needs matplotlib, which cannot be imported here ({exc}): "
                         f"{INSTALL_HINT}") from None


def title(report):
    """The picture's title: what ran, on which interpreter (its GIL) and machine."""
    gil = report.get("gil_enabled")
    build = "free-threaded" if report.get("free_threaded") else "GIL build"
    state = "" if gil is None else f", GIL {'on' if gil else 'off'}"
    cpus = f"{report['cpus']} CPUs"
    if report.get("cpu_model"):
        cpus += f" ({report['cpu_model']})"
    settings = report["settings"]
    rounds = settings["rounds"]
    paced = any(entry["client"].startswith("paced") for entry in report["loads"])
    return (f"fastserver load benchmark: {report.get('python_implementation', 'Python')} "
            f"{report['python']} ({build}{state}), {cpus}\n"
            f"server CPU per request (left, lower is better) and requests per second (right)"
            f"{'' if not paced else '; paced loads: peak threads (left) and replies (right)'}\n"
            f"medians of {rounds} interleaved round{'s' if rounds != 1 else ''} of "
            f"{settings['duration']} s; load average {report['loadavg_before']} before, "
            f"{report['loadavg_after']} after")


def draw(report, path):
    """Write the picture of ``report`` (what ``--json`` prints) to ``path`` (.png or .svg)."""
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot

    impls = report["impls"]
    bars = [impl for impl in impls if impl not in FLOORS]
    floors = [impl for impl in impls if impl in FLOORS]
    colours = {impl: pyplot.get_cmap("tab10")(index % 10) for index, impl in enumerate(bars)}
    missing = {impl for entry in report["loads"] for impl, result in entry["results"].items()
               if "unavailable" in result}
    loads = report["loads"]
    if not loads:
        raise BenchError("--plot: the report has no load to draw")
    figure, axes = pyplot.subplots(len(loads), 2, squeeze=False,
                                   figsize=(11, 1.6 + 2.2 * len(loads)))
    metrics = (("server_us_per_req", "server CPU µs/request", 1), ("rps", "requests/s", 0))
    paced = (("peak_threads", "server threads (peak)", 0), ("requests", "replies", 0))
    for row, entry in enumerate(loads):
        chosen = paced if entry["client"].startswith("paced") else metrics
        for column, (key, label, digits) in enumerate(chosen):
            ax = axes[row][column]
            _panel(ax, entry, key, digits, bars, floors, colours)
            ax.set_ylabel(label, fontsize=8)
            if column == 0:
                ax.set_title(f"load {entry['load']}: {entry['title']}", fontsize=9, loc="left")
    handles = [matplotlib.patches.Patch(
        color=colours[impl],
        label=IMPL_LABELS[impl] + (" (unavailable here)" if impl in missing else ""))
        for impl in bars]
    handles += [matplotlib.lines.Line2D([], [], color="black", linestyle=FLOOR_STYLES[impl],
                                        label=f"{IMPL_LABELS[impl]} (the floor)")
                for impl in floors]
    figure.suptitle(title(report), fontsize=10)
    height = figure.get_figheight()
    figure.legend(handles=handles, loc="upper center", ncol=min(len(handles), 5), fontsize=8,
                  bbox_to_anchor=(0.5, 1 - 0.78 / height), frameon=False)
    figure.subplots_adjust(left=0.07, right=0.99, bottom=0.15 / height, top=1 - 1.6 / height,
                           hspace=0.38, wspace=0.15)
    figure.savefig(path)
    pyplot.close(figure)


def _panel(ax, entry, key, digits, bars, floors, colours):
    """One load's panel for one figure: a bar per implementation, a line per floor."""
    results = entry["results"]
    top = 0.0
    for slot, impl in enumerate(bars):
        result = results.get(impl)
        if result is None:
            continue  # not run on this load (the peers have no HTTP server)
        if "unavailable" in result:
            ax.text(slot, 0, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
            continue
        value = result["median"].get(key)
        if value is None:
            continue
        ax.bar(slot, value, color=colours[impl], width=0.8)
        ax.text(slot, value, f"{value:,.{digits}f}", ha="center", va="bottom", fontsize=7)
        top = max(top, value)
    for impl in floors:
        result = results.get(impl)
        value = result["median"].get(key) if result and "median" in result else None
        if value is not None:
            ax.axhline(value, color="black", linestyle=FLOOR_STYLES[impl], linewidth=1)
            top = max(top, value)
    ax.set_xticks([])
    ax.set_xlim(-0.6, len(bars) - 0.4)
    ax.set_ylim(0, top * 1.2 or 1)
    ax.tick_params(axis="y", labelsize=7)
