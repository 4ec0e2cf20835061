"""``python -m fastserver``: say which fastserver runs here (version, core, poller, Python), and
when it is the pure core, why: FASTSERVER_NO_EXTENSIONS at run time, or a compiled core that was
not built (the reason setup.py recorded in fastserver/_build.json) or does not import."""

import importlib
import json
import os
import pathlib
import platform
import sys

import fastserver
from fastserver import _cores

BUILD_RECORD = pathlib.Path(__file__).with_name("_build.json")
ADVICE = ("Install a C compiler and Python's headers (Debian: apt-get install gcc python3-dev), "
          "then reinstall; FASTSERVER_REQUIRE_EXTENSIONS=1 at install makes a failed build an "
          "error.")


def build_record():
    """What the build recorded (see setup.py), or None where it recorded nothing (a source
    tree that was never built, or a build older than the record)."""
    try:
        return json.loads(BUILD_RECORD.read_text())
    except (OSError, ValueError):
        return None


def failures(record):
    """'module: first line of the error' for each module whose build failed, with the
    compiler."""
    failed = (record or {}).get("failed") or {}
    return [f"{module}: {error} (compiler: {record.get('compiler', 'unknown')})"
            for module, error in sorted(failed.items())]


def notes():
    """The lines to print after the first: why the pure core runs, what failed to build."""
    record = build_record()
    lines = []
    if "cython" in _cores.CORES:
        if not fastserver.IMPLEMENTATION.startswith("cython-"):
            compiled = _cores.CORES["cython"].implementation
            lines.append(f"The pure core runs because FASTSERVER_NO_EXTENSIONS="
                         f"{os.environ.get('FASTSERVER_NO_EXTENSIONS', '')} is set; the "
                         f"compiled core ({compiled}) is installed.")
        broken = failures(record)
        if broken:
            lines.append("These compiled modules were not built (their pure twins run):")
            lines += [f"  {line}" for line in broken]
        return lines
    lines.append("The compiled core is not installed, so the pure core runs.")
    if record is None:
        lines.append("No build record: a source tree whose extension was never built?")
    elif "skipped" in record:
        lines.append(f"It was not built: {record['skipped']}.")
    elif record.get("failed"):
        lines.append("Its build failed:")
        lines += [f"  {line}" for line in failures(record)]
        if record.get("python_headers") is False:
            lines.append("Python's headers (Python.h) were missing.")
        lines.append(ADVICE)
    else:
        try:
            importlib.import_module("fastserver._core")
        except ImportError as exc:
            lines.append(f"It was built but does not import: {exc}")
    return lines


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fastserver",
        description="Say which fastserver runs here: its version, core and poller, and why the "
                    "pure core runs where it does.")
    parser.add_argument("--version", action="version", version=f"fastserver {fastserver.VERSION}",
                        help="print fastserver's version and exit")
    parser.parse_args(argv)
    try:
        from importlib.metadata import PackageNotFoundError, version

        release = version("fastserver")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
        release = "(not installed)"
    print(f"fastserver {release}: {fastserver.IMPLEMENTATION} core on "
          f"{platform.python_implementation()} {platform.python_version()} ({sys.platform})")
    for line in notes():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
