#!/usr/bin/env bash
# Memory checks of the compiled extensions, in a scratch copy of the working tree (the normal
# in-place build is left alone):
#
#   asan      build with -fsanitize=address (FASTSERVER_SANITIZE=address FASTSERVER_DEBUG=1) and run
#             the test suite with libasan preloaded (leak detection off: CPython leaks at exit by
#             design); fails on any AddressSanitizer report, from the tests or their children.
#   valgrind  build with FASTSERVER_DEBUG=1 (no sanitizer) and run a subset of the tests (the
#             compiled core's params) under valgrind memcheck with PYTHONMALLOC=malloc; fails on
#             any error with a frame in fastserver's objects (_core, _acceptors, _stream, _proxy,
#             and the C in csrc/).
#
# Usage: scripts/sanitize.sh [asan|valgrind|all] [-- extra pytest arguments]   (default: all)
# Environment: KEEP=1 keeps the scratch copy; VALGRIND_TESTS overrides the valgrind subset;
#              ASAN_TESTS overrides the suite run under ASan (default: tests).
# Exit status: 0 clean, 1 a sanitizer/valgrind finding, 2 a build or setup failure. Test
# failures alone (timing-sensitive tests can fail when slowed down) are reported, not fatal.
set -uo pipefail

mode=${1:-all}
shift || true
[[ ${1:-} == -- ]] && shift
extra=("$@")
case $mode in asan|valgrind|all) ;; *) echo "usage: $0 [asan|valgrind|all] [-- pytest args]" >&2; exit 2;; esac

root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel) || exit 2
# The interpreter itself, not a wrapper (a pyenv shim is a shell script: valgrind would run that).
python=$("${PYTHON:-python}" -c 'import sys; print(sys.executable)') || exit 2
scratch=$(mktemp -d /tmp/fastserver-sanitize.XXXXXX)
cleanup() { if [[ ${KEEP:-0} == 1 ]]; then echo "scratch copy kept: $scratch"; else rm -rf "$scratch"; fi; }
trap cleanup EXIT

# Tracked files and untracked ones git does not ignore: the working tree as it is, minus builds.
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$scratch" || exit 2
cd "$scratch" || exit 2
echo "== scratch copy: $scratch"

build() {  # build [extra environment...]
    env "$@" FASTSERVER_DEBUG=1 FASTSERVER_REQUIRE_EXTENSIONS=1 \
        "$python" setup.py build_ext --inplace --force -q >build.log 2>&1 \
        || { echo "build failed:"; tail -30 build.log; exit 2; }
    rm -rf build
}

# A valgrind frame in fastserver's objects: a source file of ours (the debug build has line
# info), the extension's .so (without it), or the poller's C API.
objects_pattern='\((_core|_acceptors|_stream|_proxy|poller|acceptor|turn)\.(c|pyx|pxd|h):[0-9]+\)|/fastserver/[^ )]*\.so\b|\bfs_(poller|wakeup|accept|acceptor|acceptors|stop|turn|wait|set)_?[a-z_]*\b'
status=0

run_asan() {
    echo "== ASan: building with -fsanitize=address"
    build FASTSERVER_SANITIZE=address
    local libasan
    libasan=$(gcc -print-file-name=libasan.so)
    [[ -e $libasan ]] || { echo "no libasan.so from gcc"; exit 2; }
    mkdir -p asan-logs
    export LD_PRELOAD=$libasan
    export ASAN_OPTIONS="detect_leaks=0:log_path=$scratch/asan-logs/asan:abort_on_error=0"
    # Make sure the instrumented core is the one that runs.
    PYTHONPATH=src "$python" -c '
import fastserver, fastserver._core as c
assert fastserver.IMPLEMENTATION.startswith("cython-"), fastserver.IMPLEMENTATION
print("   core:", fastserver.IMPLEMENTATION, c.__file__)' || { unset LD_PRELOAD; exit 2; }
    local started=$SECONDS
    # The resident-memory test is left out: ASan's quarantine holds freed memory (256 MiB).
    # shellcheck disable=SC2086
    PYTHONPATH=src timeout 1800 "$python" -m pytest ${ASAN_TESTS:-tests} -q -p no:cacheprovider \
        --deselect tests/test_reliability.py::test_resident_memory_stays_flat_over_many_connections \
        "${extra[@]}" >asan-pytest.log 2>&1
    local rc=$?
    unset LD_PRELOAD ASAN_OPTIONS
    echo "   pytest exit $rc in $((SECONDS - started)) s: $(tail -1 asan-pytest.log)"
    local reports
    reports=$(grep -l "ERROR: AddressSanitizer" asan-logs/asan.* 2>/dev/null | wc -l)
    if ((reports)); then
        echo "!! ASan: $reports report(s):"
        for f in $(grep -l "ERROR: AddressSanitizer" asan-logs/asan.*); do
            echo "--- $f"; head -40 "$f"
        done
        status=1
    else
        echo "   ASan: no report"
    fi
    if ((rc != 0 && rc != 1)); then  # 1: failed tests; anything else: pytest itself broke
        echo "!! pytest under ASan ended abnormally (exit $rc):"; tail -30 asan-pytest.log
        status=1
    elif ((rc == 1)); then
        grep -E "^(FAILED|ERROR) " asan-pytest.log | sed 's/^/   /'
    fi
}

run_valgrind() {
    command -v valgrind >/dev/null || { echo "valgrind not installed"; exit 2; }
    echo "== valgrind: building with FASTSERVER_DEBUG=1 (no sanitizer)"
    build
    local tests=${VALGRIND_TESTS:-}
    if [[ -z $tests ]]; then
        for candidate in tests/test_servers.py tests/test_stream.py tests/test_request_threads.py \
                tests/test_first_data.py tests/test_turns.py; do
            [[ -e $candidate ]] && tests+="$candidate "
        done
    fi
    mkdir -p valgrind-logs
    local started=$SECONDS
    # shellcheck disable=SC2086
    PYTHONMALLOC=malloc PYTHONPATH=src timeout 3000 valgrind --tool=memcheck --error-exitcode=99 \
        --errors-for-leak-kinds=none --leak-check=no --num-callers=40 \
        --log-file="$scratch/valgrind-logs/vg.%p" \
        "$python" -m pytest $tests -q -p no:cacheprovider -k cython "${extra[@]}" \
        >valgrind-pytest.log 2>&1
    local rc=$?
    echo "   valgrind/pytest exit $rc in $((SECONDS - started)) s: $(tail -1 valgrind-pytest.log)"
    # Split each log into error records; keep those with a frame in fastserver's objects.
    "$python" - "$objects_pattern" valgrind-logs/vg.* <<'EOF'
import re
import sys

pattern = re.compile(sys.argv[1])
ours = total = 0
for path in sys.argv[2:]:
    records, current = [], []
    for line in open(path, errors="replace"):
        text = re.sub(r"^==\d+== ?", "", line.rstrip("\n"))
        if text.strip():
            current.append(text)
        elif current:
            records.append(current)
            current = []
    records.append(current)
    for record in records:
        frames = [l for l in record if re.match(r"\s+(at|by) 0x", l)]
        if not frames or record[0].startswith(("HEAP SUMMARY", "LEAK SUMMARY")):
            continue
        total += 1
        if any(pattern.search(f) for f in frames):
            ours += 1
            print(f"!! {path}:"); print("\n".join("   " + l for l in record[:30]))
print(f"   valgrind: {total} error record(s), {ours} in fastserver's objects")
sys.exit(1 if ours else 0)
EOF
    (($? == 0)) || status=1
    if ((rc == 1)); then
        grep -E "^(FAILED|ERROR) " valgrind-pytest.log | sed 's/^/   /'
    fi
}

[[ $mode == asan || $mode == all ]] && run_asan
[[ $mode == valgrind || $mode == all ]] && run_valgrind
echo "== result: $([[ $status == 0 ]] && echo clean || echo FINDINGS)"
exit $status
