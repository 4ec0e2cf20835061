"""The report: markdown tables of a run's medians, what makes its figures doubtful, the text."""

from .loads import FLOORS, IMPL_LABELS


def fmt(value, digits):
    """A figure with thousands separators and ``digits`` decimals; "-" for None."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(numerator, denominator):
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def table(head, rows):
    """A markdown table's lines: the head, its rule, a line per row (cells already text)."""
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def markdown(report):
    """The results as markdown tables: per load, CPU per request and requests/s, then latency and
    the load generator's own CPU."""
    impls = report["impls"]
    others = [impl for impl in impls if impl != "stdlib"]
    head = ["load", "stdlib µs/req"]
    for impl in others:
        head += [f"{IMPL_LABELS[impl]} µs/req", "ratio"]
    head.append("stdlib req/s")
    for impl in others:
        head += [f"{IMPL_LABELS[impl]} req/s", "ratio"]
    rows = []
    for entry in report["loads"]:
        med = {impl: entry["results"][impl]["median"] if impl in entry["results"] else {}
               for impl in impls}
        base = med.get("stdlib", {})
        row = [f"{entry['load']}. {entry['title']}", fmt(base.get("server_us_per_req"), 1)]
        for impl in others:
            row += [fmt(med[impl].get("server_us_per_req"), 1),
                    _ratio(base.get("server_us_per_req"), med[impl].get("server_us_per_req"))]
        row.append(fmt(base.get("rps"), 0))
        for impl in others:
            row += [fmt(med[impl].get("rps"), 0), _ratio(med[impl].get("rps"), base.get("rps"))]
        rows.append(row)
    lines = table(head, rows)
    lines += ["", "ratio: stdlib µs/req ÷ that column's µs/req, and its req/s ÷ stdlib req/s "
                  "(above 1: better than the stdlib). Medians of interleaved rounds.", ""]
    head = ["load", "implementation", "p50 µs", "p99 µs", "server CPU µs/req",
            "of which user", "server ctx switches/req", "client CPU µs/req", "client busy",
            "errors"]
    rows = []
    for entry in report["loads"]:
        for impl in [impl for impl in impls if impl in entry["results"]]:
            med = entry["results"][impl]["median"]
            errors = sum(r["errors"] for r in entry["results"][impl]["rounds"])
            rows.append([
                str(entry["load"]), IMPL_LABELS[impl], fmt(med["p50_us"], 0),
                fmt(med["p99_us"], 0), fmt(med["server_us_per_req"], 1),
                fmt(med["server_user_us_per_req"], 1), fmt(med["server_switches_per_req"], 1),
                fmt(med["client_us_per_req"], 1),
                "-" if med["client_busy"] is None else f"{med['client_busy']:.0%}",
                str(errors)])
    return "\n".join(lines + table(head, rows))


def warnings_for(report):
    """What makes figures doubtful: errors, a client that works harder than the server."""
    notes = []
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            med = result["median"]
            errors = sum(r["errors"] for r in result["rounds"])
            if errors:
                notes.append(f"load {entry['load']} {impl}: {errors} client errors")
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


def with_notes(text, notes):
    """The text of a report and its notes below it, a blank line before each."""
    return text + "\n" + "".join(f"\nnote: {line}" for line in notes)


def text(report):
    """The whole report as ``python -m fastserver.bench`` prints it (without ``--json``)."""
    settings = report["settings"]
    rounds = settings["rounds"]
    header = [
        f"fastserver load benchmark: {report['command']}",
        f"Python {report['python']}, {report['platform']}, {report['cpus']} CPUs; "
        f"{rounds} round{'s' if rounds != 1 else ''} of {settings['duration']} s; "
        f"{report['elapsed_s']:.0f} s in all; load average {report['loadavg_before']} "
        f"before, {report['loadavg_after']} after",
    ]
    seen = {}
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            seen.setdefault(impl, (result["implementation"], result["streams"]))
    header.append("; ".join(f"{IMPL_LABELS[impl]}: {name}, stream files from {streams}"
                            for impl, (name, streams) in seen.items()
                            if impl != "stdlib" and impl not in FLOORS))
    return with_notes("\n".join([*header, "", markdown(report)]),
                      report["skipped"] + report["warnings"])
