"""The report: markdown tables of a run's medians, what makes its figures doubtful, the text."""

import textwrap

from .loads import BASELINE, FLOORS, IMPL_LABELS

WIDTH = 100  # columns of the text that python -m fastserver.bench prints (the detail table aside)


def fmt(value, digits):
    """A figure with thousands separators and ``digits`` decimals; "-" for None."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(numerator, denominator):
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def table(head, rows, text_columns=None):
    """A markdown table's lines: the head, its rule, a line per row (cells already text). Given
    ``text_columns`` (how many columns of text come first), the others are aligned right."""
    if text_columns is None:
        rule = "|" + "---|" * len(head)
    else:
        rule = "|" + "---|" * text_columns + "---:|" * (len(head) - text_columns)
    return (["| " + " | ".join(head) + " |", rule]
            + ["| " + " | ".join(row) + " |" for row in rows])


def _present(entry, impls):
    """The implementations of ``impls`` that a load's entry has, measured or unavailable."""
    return [impl for impl in impls if impl in entry["results"]]


def loads_legend(report, width=WIDTH):
    """The loads' titles, wrapped to ``width`` columns (the summary table names loads by number)."""
    titles = "; ".join(f"{entry['load']}. {entry['title']}" for entry in report["loads"])
    return textwrap.wrap(f"loads: {titles}", width, subsequent_indent="  ")


def _paced(entry):
    return entry["client"].startswith("paced")


def paced_label(report, entry, impl):
    """An implementation's name in the paced table: fastserver's with its max_threads."""
    label = IMPL_LABELS[impl]
    limit = entry["results"][impl].get("max_threads")
    return f"{label}, max_threads {limit}" if limit else label


def paced_summary(report):
    """The paced loads' table (many mostly idle connections): per load and implementation, the
    replies in the measured periods (and as a share of the stdlib's), the server's CPU per reply,
    p99 latency, peak threads, RSS growth per connection, and requests due but not answered."""
    head = ["load", "implementation", "replies", "% stdlib", "CPU µs/reply", "p99 ms",
            "threads", "KiB/conn", "unanswered"]
    rows = []
    for entry in report["loads"]:
        if not _paced(entry):
            continue
        base = entry["results"].get("stdlib", {}).get("median", {})
        first = True
        for impl in _present(entry, report["impls"]):
            result = entry["results"][impl]
            number = f"{entry['load']} ({entry['conns']:,})" if first else ""
            first = False
            if "unavailable" in result:
                rows.append([number, IMPL_LABELS[impl], "unavailable"] + [""] * 6)
                continue
            med = result["median"]
            share = "-"
            if base.get("requests"):
                ratio = med["requests"] / base["requests"]
                share = f"{ratio:.0%}" if ratio < 10 else f"{ratio:,.0f}x"
            due = (med["sent"] or 0) + (med["skipped"] or 0)
            p99 = None if med["p99_us"] is None else med["p99_us"] / 1000
            rows.append([
                number, paced_label(report, entry, impl), fmt(med["requests"], 0), share,
                fmt(med["server_us_per_req"], 1), fmt(p99, 1), fmt(med["peak_threads"], 0),
                fmt(med["rss_growth_kib_per_conn"], 1), fmt(max(due - med["requests"], 0), 0)])
    return table(head, rows, text_columns=2)


PACED_LEGEND = [
    "paced loads (connections in brackets): replies in the measured periods, and as a share of",
    "the stdlib's; server CPU per reply over those periods; p99 latency of those replies; the",
    "server's peak threads; its RSS growth (peak over before) per connection; requests due but",
    "not answered in time (sent and unanswered, or not sent: the last one still unanswered).",
]


def summary(report):
    """The summary table's lines: per load, a row per implementation with its server CPU per
    request and req/s (each against the stdlib's) and latency; under 100 columns."""
    head = ["load", "implementation", "server CPU µs/req", "gain", "req/s", "gain", "p50 µs",
            "p99 µs"]
    rows = []
    for entry in report["loads"]:
        if _paced(entry):
            continue
        base = entry["results"].get("stdlib", {}).get("median", {})
        first = True
        for impl in _present(entry, report["impls"]):
            result = entry["results"][impl]
            number = str(entry["load"]) if first else ""
            first = False
            if "unavailable" in result:
                rows.append([number, IMPL_LABELS[impl], "unavailable", "", "", "", "", ""])
                continue
            med = result["median"]
            rows.append([
                number, IMPL_LABELS[impl], fmt(med["server_us_per_req"], 1),
                _ratio(base.get("server_us_per_req"), med["server_us_per_req"]),
                fmt(med["rps"], 0), _ratio(med["rps"], base.get("rps")),
                fmt(med["p50_us"], 0), fmt(med["p99_us"], 0)])
    return table(head, rows, text_columns=2)


def detail(report):
    """The detail table's lines: per load and implementation, where the server's time went (user
    time, context switches), the client's CPU, errors."""
    head = ["load", "implementation", "p50 µs", "p99 µs", "server CPU µs/req",
            "of which user", "server ctx switches/req", "client CPU µs/req", "client busy",
            "errors"]
    rows = []
    for entry in report["loads"]:
        for impl in _present(entry, report["impls"]):
            result = entry["results"][impl]
            if "unavailable" in result:
                continue
            med = result["median"]
            errors = sum(r["errors"] for r in result["rounds"])
            if _paced(entry):
                med = dict(med, client_busy=None)  # the client idles between its requests
            rows.append([
                str(entry["load"]), IMPL_LABELS[impl], fmt(med["p50_us"], 0),
                fmt(med["p99_us"], 0), fmt(med["server_us_per_req"], 1),
                fmt(med["server_user_us_per_req"], 1), fmt(med["server_switches_per_req"], 1),
                fmt(med["client_us_per_req"], 1),
                "-" if med["client_busy"] is None else f"{med['client_busy']:.0%}",
                str(errors)])
    return table(head, rows, text_columns=2)


def markdown(report, with_detail=False):
    """The results as markdown: the summary table, the loads' titles, the ratios' meaning; the
    paced loads' table; then, ``with_detail``, the detail table."""
    lines = []
    if any(not _paced(entry) for entry in report["loads"]):
        lines += summary(report) + [""]
    if any(_paced(entry) for entry in report["loads"]):
        lines += paced_summary(report) + [""]
    lines += loads_legend(report)
    if any(not _paced(entry) for entry in report["loads"]):
        lines += [
            "gain: the stdlib's server CPU per request ÷ this one's, and this one's req/s ÷ the",
            "stdlib's (above 1: better than the stdlib). Medians of interleaved rounds."]
    if any(_paced(entry) for entry in report["loads"]):
        lines += PACED_LEGEND
    if with_detail:
        lines += [""] + detail(report)
    return "\n".join(lines)


def unavailable_notes(report):
    """A line per reason an implementation could not run (uvloop not installed), naming them."""
    by_reason = {}
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            if "unavailable" in result:
                impls = by_reason.setdefault(result["unavailable"], [])
                if impl not in impls:
                    impls.append(impl)
    return [f"{', '.join(impls)}: not run, {reason}" for reason, impls in by_reason.items()]


def warnings_for(report):
    """What makes figures doubtful: errors, a client that works harder than the server."""
    notes = unavailable_notes(report)
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            if "unavailable" in result:
                continue
            med = result["median"]
            errors = sum(r["errors"] for r in result["rounds"])
            if errors:
                notes.append(f"load {entry['load']} {impl}: {errors} client errors")
            if _paced(entry):
                notes += _paced_warnings(entry, impl, result)
                continue
            client, server = med["client_us_per_req"], med["server_us_per_req"]
            busy = med["client_busy"] or 0.0
            if client is not None and server is not None and client >= server:
                why = (": its req/s is the client's limit" if busy > 0.9 else
                       " (on loopback the kernel's TCP work of both ends is shared between them)")
                notes.append(f"load {entry['load']} {impl}: the client used more CPU per request "
                             f"({client:.1f} µs) than the server ({server:.1f} µs), busy "
                             f"{busy:.0%} of a core{why}")
            elif busy > 0.9:
                notes.append(f"load {entry['load']} {impl}: the client was busy {busy:.0%} of a "
                             f"core: its req/s may be the client's limit")
            # wrk closes its connections mid-reply when its time is up: the server's write fails
            tracebacks = result["server_tracebacks"]
            if entry["client"] == "wrk":
                tracebacks -= result["server_tracebacks_client_gone"]
            if tracebacks > 0:
                notes.append(f"load {entry['load']} {impl}: {tracebacks} tracebacks in the "
                             f"server's stderr")
    return notes


def _paced_warnings(entry, impl, result):
    """A paced load's doubts: connections that never opened, a server's tracebacks."""
    notes = []
    short = [r.get("answered", r["ramped"]) for r in result["rounds"]
             if (r.get("answered", r["ramped"]) or 0) < entry["conns"]]
    if short:
        notes.append(f"load {entry['load']} {impl}: only {min(short):,} of {entry['conns']:,} "
                     f"connections had had a reply when the ramp ended (in {len(short)} "
                     f"round(s))")
    if result["server_tracebacks"] > 0:
        commonest = "; ".join(f"{count} {line}" for line, count in
                              result.get("server_exceptions", []))
        notes.append(f"load {entry['load']} {impl}: {result['server_tracebacks']} tracebacks in "
                     f"the server's stderr" + (f" ({commonest})" if commonest else ""))
    return notes


def with_notes(text, notes):
    """The text of a report and its notes below it, a blank line before each."""
    return text + "\n" + "".join(f"\nnote: {line}" for line in notes)


def fill(parts, width=WIDTH, separator="; ", indent="  "):
    """Lines of at most ``width`` columns holding ``parts`` joined by ``separator``; a line ends
    between parts (and inside one only where it is too long alone)."""
    lines = []
    line = ""
    for index, part in enumerate(parts):
        text = part + (separator.rstrip() if index < len(parts) - 1 else "")
        candidate = f"{line} {text}" if line else text
        if len(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = indent + text
    if line:
        lines.append(line)
    return [wrapped for line in lines
            for wrapped in textwrap.wrap(line, width, subsequent_indent=indent)]


def _on_off(flag):
    return "?" if flag is None else ("on" if flag else "off")


def where_it_ran(report):
    """The header's lines on the interpreter, the machine and the run (a report saved by an
    older bench may lack some of these figures: they are left out)."""
    settings = report["settings"]
    rounds = settings["rounds"]
    interpreter = f"{report.get('python_implementation', 'Python')} {report['python']}"
    if "free_threaded" in report:
        build = "free-threaded build" if report["free_threaded"] else "GIL build"
        interpreter += f" ({build}, GIL {_on_off(report.get('gil_enabled'))} in the bench)"
    if report.get("fastserver_core"):
        interpreter += f", fastserver core {report['fastserver_core']}"
    cpus = f"{report['cpus']} CPUs"
    if report.get("cpus_usable") not in (None, report["cpus"]):
        cpus += f" ({report['cpus_usable']} usable)"
    if report.get("cpu_model"):
        cpus = f"{report['cpu_model']}, {cpus}"
    paced = [entry for entry in report["loads"] if _paced(entry)]
    length = f"{settings['duration']} s" if len(paced) < len(report["loads"]) else None
    if paced and "period" in settings:
        pace = (f"a request per {settings['period']:g} s per connection, "
                f"{settings['periods']} measured periods")
        length = f"{length}; paced loads: {pace}" if length else pace
    lines = fill([
        interpreter, report["platform"], cpus,
        f"{rounds} round{'s' if rounds != 1 else ''} of {length}, "
        f"{report['elapsed_s']:.0f} s in all",
        f"load average {report['loadavg_before']} before, {report['loadavg_after']} after"])
    seen = {}
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            if "implementation" in result:
                seen.setdefault(impl, result)
    servers = []
    for impl in [impl for impl in report["impls"] if impl in seen]:
        if impl == "stdlib" or impl in FLOORS:
            continue
        result = seen[impl]
        what = result["implementation"]
        if result.get("streams"):
            what += f", stream files from {result['streams']}"
        if impl == BASELINE and result.get("package"):
            what += f", from {result['package']}"
        servers.append(f"{IMPL_LABELS[impl]}: {what}")
    if servers:
        lines += fill([f"servers: {servers[0]}", *servers[1:]])
    if report.get("free_threaded"):
        gil_on = [IMPL_LABELS[impl] for impl in report["impls"]
                  if impl in seen and seen[impl].get("gil_enabled")]
        lines += textwrap.wrap(
            "GIL on in the servers of: " + ", ".join(gil_on) + " (an extension module that does "
            "not declare itself safe without it turned it on)" if gil_on else
            "GIL off in every Python server", WIDTH, subsequent_indent="  ")
    return lines


def text(report, with_detail=False):
    """The whole report as ``python -m fastserver.bench`` prints it (without ``--json``)."""
    header = [*textwrap.wrap(f"fastserver load benchmark: {report['command']}", WIDTH,
                             subsequent_indent="  "), *where_it_ran(report)]
    notes = ["\n  ".join(textwrap.wrap(note, WIDTH - len("note: ")))
             for note in report["skipped"] + report["warnings"]]
    return with_notes("\n".join([*header, "", markdown(report, with_detail)]), notes)
