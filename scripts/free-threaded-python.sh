#!/usr/bin/env bash
# A free-threaded CPython 3.13 (--disable-gil) for development and CI, built from Debian's source package.
#
#   scripts/free-threaded-python.sh          # prints the interpreter's path as its last line
#   scripts/free-threaded-python.sh --tsan   # the same, built with ThreadSanitizer (scripts/sanitize.sh tsan)
#
# The build lives in $FASTSERVER_CACHE (default ~/.cache/fastserver) and is reused when it is already there and
# runs; a build takes about 10 minutes on two cores. Debian 12 has no 3.13, so the source comes from trixie's
# deb-src entry (added here, sources only: no binary package is taken from trixie).
set -euo pipefail

flavour=ft
configure_extra=()
case "${1:-}" in
    "") ;;
    --tsan) flavour=ft-tsan; configure_extra=(--with-thread-sanitizer) ;;
    *) echo "usage: $0 [--tsan]" >&2; exit 2 ;;
esac

cache="${FASTSERVER_CACHE:-$HOME/.cache/fastserver}"
prefix="$cache/python3.13-$flavour"
python="$prefix/bin/python3.13t"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "not root and no sudo: cannot run $*" >&2; return 1; fi
}

# A build counts only if it runs and really is free-threaded.
usable() {
    [ -x "$python" ] && "$python" -c 'import sys, sysconfig, ensurepip, ssl
sys.exit(not sysconfig.get_config_var("Py_GIL_DISABLED"))' 2>/dev/null
}

if usable; then
    say "reusing $python"
    echo "$python"
    exit 0
fi

source_dir="$cache/src"
mkdir -p "$source_dir"
newest_tarball() {  # the newest downloaded source, or nothing
    local found=("$source_dir"/python3.13_3.13.*.orig.tar.xz)
    [ -e "${found[-1]}" ] && printf '%s' "${found[-1]}"
    return 0
}
tarball="$(newest_tarball)"
if [ -z "$tarball" ]; then
    list=/etc/apt/sources.list.d/fastserver-trixie-src.sources
    if [ ! -e "$list" ]; then
        say "adding trixie's deb-src entry ($list)"
        printf '%s\n' 'Types: deb-src' 'URIs: http://deb.debian.org/debian' 'Suites: trixie' \
            'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
            | as_root tee "$list" >/dev/null
    fi
    as_root apt-get update -qq >/dev/null
    say "downloading python3.13's source package"
    (cd "$source_dir" && apt-get source --download-only -qq python3.13 >/dev/null)
    tarball="$(newest_tarball)"
    [ -n "$tarball" ] || { echo "apt-get source downloaded no python3.13 tarball" >&2; exit 1; }
fi

# What CPython's configure needs for the modules the tests use (ssl, zlib for ensurepip, ctypes,
# the compressors, sqlite3, readline); most machines with a C toolchain have them already.
build_packages=(libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev
    libreadline-dev uuid-dev pkg-config)
wanted=()
for package in "${build_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || wanted+=("$package")
done
if [ "${#wanted[@]}" -gt 0 ]; then
    say "installing the build's headers: ${wanted[*]}"
    as_root apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
fi

build="$(mktemp -d "${TMPDIR:-/tmp}/python3.13-$flavour.XXXXXX")"
trap 'rm -rf "$build"' EXIT
say "building $(basename "$tarball") with --disable-gil ${configure_extra[*]} into $prefix"
tar -xf "$tarball" -C "$build" --strip-components=1
cd "$build"
./configure --quiet --prefix="$prefix" --disable-gil --with-ensurepip=install \
    "${configure_extra[@]}" >/dev/null
make --quiet -j"$(nproc)" >/dev/null 2>make.err || { tail -n 40 make.err >&2; exit 1; }
rm -rf "$prefix"
make --quiet install >/dev/null 2>make.err || { tail -n 40 make.err >&2; exit 1; }
usable || { echo "the build at $prefix does not run free-threaded" >&2; exit 1; }
say "built $python"
echo "$python"
