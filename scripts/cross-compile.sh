#!/usr/bin/env bash
# The whole extension compiled for macOS (arm64 and x86_64) and FreeBSD (x86_64) on this Linux
# machine: the kqueue build (csrc/compat.h), which nothing here can run.
#
#   scripts/cross-compile.sh [PYTHON]          (default: python3; its headers are used)
#
# Cython (the range pyproject.toml's build requires) turns every src/fastserver/*.pyx into C with
# setup.py's directives; zig's C compiler (PyPI's ziglang; both pinned in
# scripts/build-tools.sh), which carries each target's own libc headers, compiles that C and every csrc/*.c for each target
# with -Wall -Werror, the way setup.py would (-O2, csrc/ on the include path, the interpreter's
# headers). Compile only (-c): linking needs each system's libraries and libpython, which are not
# here. A line a target says what it compiled; any warning fails the script.
#
# Only compiled, never run: the macOS and FreeBSD jobs of .github/workflows/ test that build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-python3}"
TARGETS=(aarch64-macos x86_64-macos x86_64-freebsd)

work="$(mktemp -d "${TMPDIR:-/tmp}/fastserver-cross.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# shellcheck source=scripts/build-tools.sh
. "$root/scripts/build-tools.sh"
tools="$(build_tools "$python")"
zig="$(zig_binary "$tools")"

# The C of every Cython module, as setup.py's cythonize() makes it (language_level 3,
# embedsignature), written to the scratch directory: the checkout is left alone.
generated=()
for pyx in "$root"/src/fastserver/*.pyx; do
    module="$(basename "$pyx" .pyx)"
    "$tools/cython" -3 -X embedsignature=True --module-name "fastserver.$module" \
        -I "$root/src" "$pyx" -o "$work/$module.c"
    generated+=("$work/$module.c")
done
sources=("$root"/csrc/*.c "${generated[@]}")

# The interpreter's headers, and its pyconfig.h where Python.h finds it. That file describes a
# Linux build; it serves for these targets because the values Python.h's inline code reads from
# it (the C types' sizes, the build's options: debug, free-threaded) are the same on the three
# LP64 targets, and the system's headers, which decide what kqueue and the sockets look like,
# are each target's own (zig's). Two things are replaced, in a pyconfig.h of each target, in a
# copy of the interpreter's include directory (Python.h includes "pyconfig.h" from its own
# directory before any -I path):
# - where the file is: Debian's /usr/include/python3.X/pyconfig.h only picks the real one by
#   __linux__ and the CPU (#error otherwise), so the real one is included by its path;
# - on macOS, the feature-test macros: CPython's configure defines _POSIX_C_SOURCE and
#   _XOPEN_SOURCE on Linux and FreeBSD but not on macOS, where they hide Darwin's own
#   declarations; left defined, this build would see other system headers than a real one.
read -r include config_h < <("$python" -c '
import os, sysconfig
include = sysconfig.get_paths()["include"]
config_h = os.path.join(include, "pyconfig.h")
multiarch = sysconfig.get_config_var("MULTIARCH") or ""
real = os.path.join(os.path.dirname(include), multiarch, os.path.basename(include), "pyconfig.h")
print(include, real if multiarch and os.path.isfile(real) else config_h)')
if [ ! -f "$include/Python.h" ] || [ ! -f "$config_h" ]; then
    echo "no Python.h/pyconfig.h for $python in $include: install its headers (python3-dev)" >&2
    exit 1
fi

compiled=()
for target in "${TARGETS[@]}"; do
    override="$work/include-$target"
    mkdir -p "$work/obj-$target"
    cp -R "$include" "$override"
    rm -f "$override/pyconfig.h"
    {
        echo "/* scripts/cross-compile.sh: the host's pyconfig.h, for $target */"
        echo "#include \"$config_h\""
        case "$target" in
            *-macos) printf '#undef %s\n' _POSIX_C_SOURCE _XOPEN_SOURCE _XOPEN_SOURCE_EXTENDED ;;
        esac
    } >"$override/pyconfig.h"
    for source in "${sources[@]}"; do
        object="$work/obj-$target/$(basename "$source" .c).o"
        if ! "$zig" cc -target "$target" -Wall -Werror -O2 -fPIC -I "$root/csrc" -I "$override" \
                -c "$source" -o "$object"; then
            echo "FAILED: $target: $source" >&2
            exit 1
        fi
    done
    # compat.h picked kqueue: the poller calls kevent() (an undefined symbol of its object)
    if ! grep -q kevent "$work/obj-$target/poller.o"; then
        echo "FAILED: $target: csrc/poller.c was not compiled for kqueue (no kevent call)" >&2
        exit 1
    fi
    echo "${target#*-} ($target): kqueue; compiled ${#sources[@]} files (csrc/*.c and the C of" \
        "${#generated[@]} Cython modules) with -Wall -Werror"
    compiled+=("$target")
done
echo "cross-compiled for: ${compiled[*]}"
