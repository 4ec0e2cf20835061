#!/usr/bin/env bash
# CPython 3.14 and 3.15 for development and CI: Debian sid's own packages, in a sid chroot.
#
#   scripts/sid-pythons.sh                  make the chroot (or reuse it); prints its path as the last line
#   scripts/sid-pythons.sh run CMD [ARG...] run CMD inside it, as root, in a private mount namespace
#   scripts/sid-pythons.sh --versions       the versions it provides, one a line (nothing is built)
#
# CPython's sources for 3.14 and 3.15 are not served here (so no free-threaded 3.14t or 3.15t can
# be built), but Debian's binary packages are: sid has python3.14 and python3.15. The chroot lives in
# $FASTSERVER_CACHE (default ~/.cache/fastserver)/sid-chroot, made once with debootstrap (about 5
# minutes, mostly downloads) and reused while both interpreters run in it. It holds, for each
# version, python3.X with -dev (the compiled core), -venv and libpython3.X-testsuite (CPython's test
# package, for tests/test_cpython_suite.py), gcc and libc6-dev, and what the tests run beside Python:
# curl, openssl, haproxy, wrk, systemd-socket-activate.
#
# "run" mounts /proc, /sys, /dev, /dev/pts and /dev/shm (sockets, multiprocessing's semaphores) in
# a mount namespace of its own: they go away with the command, however it ends, and the host never
# sees them. Each run copies in the host's DNS and hosts files, its CA certificates and its pip
# configuration (/etc/pip.conf, /etc/xdg/pip, ~/.config/pip; the PIP_* variables pass through the
# environment), and mounts read-only the local directories that configuration names (find-links,
# file:// indexes, constraints), so that pip inside reaches the same packages as pip outside.
# Needs root (or sudo), debootstrap (installed with apt-get when missing), unshare and chroot.
set -euo pipefail

VERSIONS=(3.14 3.15)
MIRROR="${FASTSERVER_SID_MIRROR:-http://deb.debian.org/debian}"

script="$(realpath "${BASH_SOURCE[0]}")"
cache="${FASTSERVER_CACHE:-$HOME/.cache/fastserver}"
chroot_dir="$cache/sid-chroot"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "not root and no sudo: cannot run $*" >&2; return 1; fi
}

packages() {
    local version
    for version in "${VERSIONS[@]}"; do
        printf '%s\n' "python$version" "python$version-dev" "python$version-venv" \
            "libpython$version-testsuite"
    done
    # the compiled core; the tests' companions (see .ci/run's system packages); ca-certificates
    # makes /etc/ssl/certs, where the host's bundle is copied
    printf '%s\n' gcc libc6-dev curl openssl haproxy wrk systemd ca-certificates
}

# The chroot counts only once it is complete (the stamp, written last) and each interpreter runs
# with what the tests need: venv, ensurepip, ssl, the headers, CPython's test package.
usable() {
    # (the stamp lists the packages installed: a chroot made with another list is made again)
    [ -e "$chroot_dir/.fastserver-sid-ready" ] &&
        [ "$(cat "$chroot_dir/.fastserver-sid-ready")" = "$(packages)" ] || return 1
    local version
    for version in "${VERSIONS[@]}"; do
        as_root chroot "$chroot_dir" "python$version" -c 'import os, sysconfig, ssl, venv, ensurepip
import test.test_socketserver
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
            >/dev/null 2>&1 || return 1
    done
}

# The directories and files that the host's pip configuration names (find-links, index URLs
# with file://, constraint and requirement files, the certificate bundle), one a line.
pip_local_paths() {
    local python
    python="$(command -v python3 || true)"
    [ -n "$python" ] || return 0
    "$python" -m pip config list 2>/dev/null | "$python" -c '
import ast, os, sys
for line in sys.stdin:
    key, _, value = line.partition("=")
    try:
        value = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        continue
    for word in str(value).split():
        if word.startswith("file://"):
            word = word[len("file://"):]
        if word.startswith("/") and os.path.exists(word):
            word = os.path.realpath(word)
            # an index: its pages link to its files beside simple/ (../../files/...)
            if key.strip().endswith("index-url") and os.path.basename(word) == "simple":
                word = os.path.dirname(word)
            print(word)
' | sort -u
}

# Host files that the chroot at $1 takes as they are on the host, at each run.
sync_host_files() {
    local chroot_dir="$1" file
    for file in /etc/resolv.conf /etc/hosts; do
        [ -e "$file" ] && as_root cp -L "$file" "$chroot_dir$file"
    done
    # The CA certificates: the bundle pip, curl and ssl read, and where SSL_CERT_* point.
    as_root mkdir -p "$chroot_dir/etc/ssl/certs"
    [ -e /etc/ssl/certs/ca-certificates.crt ] &&
        as_root cp -L /etc/ssl/certs/ca-certificates.crt "$chroot_dir/etc/ssl/certs/ca-certificates.crt"
    for file in "${SSL_CERT_FILE:-}" "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}"; do
        if [ -n "$file" ] && [ -f "$file" ]; then
            as_root mkdir -p "$chroot_dir$(dirname "$file")"
            as_root cp -L "$file" "$chroot_dir$file"
        fi
    done
    # pip's configuration files, where pip looks for them (the user's under the same $HOME)
    [ -e /etc/pip.conf ] && as_root cp -L /etc/pip.conf "$chroot_dir/etc/pip.conf"
    if [ -d /etc/xdg/pip ]; then
        as_root mkdir -p "$chroot_dir/etc/xdg"
        as_root rm -rf "$chroot_dir/etc/xdg/pip"
        as_root cp -rL /etc/xdg/pip "$chroot_dir/etc/xdg/pip"
    fi
    local user_config="${XDG_CONFIG_HOME:-$HOME/.config}/pip"
    if [ -d "$user_config" ]; then
        as_root mkdir -p "$chroot_dir$user_config"
        as_root cp -rL "$user_config/." "$chroot_dir$user_config/"
    fi
    if [ -n "${PIP_CONFIG_FILE:-}" ] && [ -f "$PIP_CONFIG_FILE" ]; then
        as_root mkdir -p "$chroot_dir$(dirname "$PIP_CONFIG_FILE")"
        as_root cp -L "$PIP_CONFIG_FILE" "$chroot_dir$PIP_CONFIG_FILE"
    fi
    as_root mkdir -p "$chroot_dir$HOME"
}

# CMD run in the chroot at $1 (see run_inside), as root, in a mount namespace of its own.
in_chroot() {
    local dir="$1"
    shift
    as_root env LC_ALL=C.UTF-8 FASTSERVER_CHROOT_DIR="$dir" \
        FASTSERVER_PIP_PATHS="$(pip_local_paths)" \
        unshare --mount --propagation private bash "$script" --inside "$@"
}

build() {
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        as_root apt-get update -qq >/dev/null
        as_root apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    local partial="$chroot_dir.partial"
    # (a namespace of its own: debootstrap's /proc and /sys mounts go with it, even if it fails,
    # and rm -rf never meets them)
    as_root rm -rf --one-file-system "$partial"
    mkdir -p "$cache"
    say "debootstrap --variant=minbase sid $partial ($MIRROR)"
    as_root unshare --mount --propagation private \
        debootstrap --variant=minbase sid "$partial" "$MIRROR" >"$cache/sid-debootstrap.log" 2>&1 || {
        tail -n 30 "$cache/sid-debootstrap.log" >&2
        echo "debootstrap failed (the whole log: $cache/sid-debootstrap.log)" >&2
        exit 1
    }
    # sid's Release file may be served past its Valid-Until date here; the host's apt says the same.
    printf 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n' |
        as_root tee "$partial/etc/apt/apt.conf.d/99fastserver" >/dev/null
    sync_host_files "$partial"
    local wanted
    mapfile -t wanted < <(packages)
    say "installing in the chroot: ${wanted[*]}"
    in_chroot "$partial" env DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -qq && apt-get install -y -qq "$@" && apt-get clean' sh "${wanted[@]}" \
        >"$cache/sid-packages.log" 2>&1 || {
        tail -n 30 "$cache/sid-packages.log" >&2
        echo "apt-get install in the chroot failed (the whole log: $cache/sid-packages.log)" >&2
        exit 1
    }
    sync_host_files "$partial"  # the host's CA bundle over the one ca-certificates made
    packages | as_root tee "$partial/.fastserver-sid-ready" >/dev/null
    as_root rm -rf --one-file-system "$chroot_dir"
    as_root mv "$partial" "$chroot_dir"
}

ensure() {
    mkdir -p "$cache"
    # one build at a time (two CI runs, or CI beside a developer's run)
    exec 9>"$cache/sid-chroot.lock"
    flock 9
    if usable; then
        say "reusing $chroot_dir"
    else
        build
        usable || { echo "the chroot at $chroot_dir has no usable python${VERSIONS[*]}" >&2; exit 1; }
        say "made $chroot_dir"
    fi
    exec 9>&-
}

# Inside the private mount namespace: the mounts, then CMD in the chroot (with the caller's working
# directory when it lies inside the chroot, else /).
run_inside() {
    local chroot_dir="$FASTSERVER_CHROOT_DIR" dir path
    for dir in proc sys dev dev/pts dev/shm; do mkdir -p "$chroot_dir/$dir"; done
    mount -t proc proc "$chroot_dir/proc"
    mount --rbind /sys "$chroot_dir/sys"
    mount --bind /dev "$chroot_dir/dev"
    mount --bind /dev/pts "$chroot_dir/dev/pts"
    if mountpoint -q /dev/shm; then
        mount --bind /dev/shm "$chroot_dir/dev/shm"
    else
        mount -t tmpfs -o mode=1777 shm "$chroot_dir/dev/shm"
    fi
    while read -r path; do
        [ -n "$path" ] || continue
        case "$path" in "$chroot_dir"*) continue ;; esac
        if [ -d "$path" ]; then
            mkdir -p "$chroot_dir$path"
        else
            [ -e "$chroot_dir$path" ] && continue  # a file copied by sync_host_files
            mkdir -p "$chroot_dir$(dirname "$path")"
            touch "$chroot_dir$path"
        fi
        mount --bind "$path" "$chroot_dir$path"
        mount -o remount,bind,ro "$chroot_dir$path"
    done <<< "$FASTSERVER_PIP_PATHS"
    local inner=/
    case "$PWD/" in "$chroot_dir"/*) inner="${PWD#"$chroot_dir"}" ;; esac
    # shellcheck disable=SC2016 # expanded by the inner shell
    exec chroot "$chroot_dir" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "${inner:-/}" "$@"
}

case "${1:-}" in
    "")
        ensure
        echo "$chroot_dir"
        ;;
    --versions)
        printf '%s\n' "${VERSIONS[@]}"
        ;;
    run)
        shift
        [ "$#" -gt 0 ] || { echo "usage: $0 run CMD [ARG...]" >&2; exit 2; }
        ensure
        sync_host_files "$chroot_dir"
        in_chroot "$chroot_dir" "$@"
        ;;
    --inside)  # run's second half, inside the mount namespace
        shift
        run_inside "$@"
        ;;
    *)
        echo "usage: $0 [run CMD [ARG...] | --versions]" >&2
        exit 2
        ;;
esac
