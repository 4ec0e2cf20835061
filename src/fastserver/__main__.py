"""``python -m fastserver``: say which fastserver runs here (version, core, poller, Python)."""

import platform
import sys

import fastserver


def main():
    try:
        from importlib.metadata import PackageNotFoundError, version

        release = version("fastserver")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
        release = "(not installed)"
    print(f"fastserver {release}: {fastserver.IMPLEMENTATION} core on "
          f"{platform.python_implementation()} {platform.python_version()} ({sys.platform})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
