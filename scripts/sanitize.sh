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
#   tsan      data races: a free-threaded CPython built with --with-thread-sanitizer
#             (scripts/free-threaded-python.sh --tsan: about 12 minutes the first time, then
#             reused), a virtual environment for it beside it in the cache (a few minutes, once),
#             the extensions built with -fsanitize=thread FASTSERVER_DEBUG=1, and the threaded
#             tests on the compiled core run under it, with PYTHON_GIL=0 while the extensions
#             would turn the GIL back on. Fails on any ThreadSanitizer report with a frame in
#             fastserver's code (its .so files, src/fastserver, csrc/) among the first frames of
#             a racing access, or one that CPython's code makes when fastserver's called it and
#             no list names it. CPython's own are listed, not fatal, with the line of the list
#             that names them (CPython's Tools/tsan/suppressions_free_threading.txt, or
#             scripts/tsan-suppressions.txt with the reason); TSan itself suppresses nothing,
#             so no CPython pattern can hide one of ours. Not part of all.
#
# Usage: scripts/sanitize.sh [asan|valgrind|tsan|all] [-- extra pytest arguments]
#        (default: all, which is asan and valgrind)
# Environment: KEEP=1 keeps the scratch copy; VALGRIND_TESTS overrides the valgrind subset;
#              ASAN_TESTS overrides the suite run under ASan (default: tests); TSAN_TESTS the
#              files run under TSan, TSAN_SELECT their -k expression (default: the compiled
#              core's cases and the tests that take no core).
# Exit status: 0 clean, 1 a sanitizer/valgrind finding, 2 a build or setup failure. Test
# failures alone (timing-sensitive tests can fail when slowed down) are reported, not fatal.
set -uo pipefail

mode=${1:-all}
shift || true
[[ ${1:-} == -- ]] && shift
extra=("$@")
case $mode in asan|valgrind|tsan|all) ;;
    *) echo "usage: $0 [asan|valgrind|tsan|all] [-- pytest args]" >&2; exit 2;; esac

root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel) || exit 2
# The interpreter itself, not a wrapper (a pyenv shim is a shell script: valgrind would run that).
python=$("${PYTHON:-python}" -c 'import sys; print(sys.executable)') || exit 2
if [[ $mode == tsan ]]; then  # before the scratch copy: the first build takes long
    tsan_python=$("$root/scripts/free-threaded-python.sh" --tsan | tail -n1) || exit 2
fi
scratch=$(mktemp -d /tmp/fastserver-sanitize.XXXXXX)
# shellcheck disable=SC2317 # run by the trap
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
        grep -l "ERROR: AddressSanitizer" asan-logs/asan.* | while read -r f; do
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
    "$python" - "$objects_pattern" valgrind-logs/vg.* <<'EOF' || status=1
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
    if ((rc == 1)); then
        grep -E "^(FAILED|ERROR) " valgrind-pytest.log | sed 's/^/   /'
    fi
}

run_tsan() {
    # The interpreter's own runs (venv, pip, the build) are not what is judged: no reports there.
    local quiet="report_bugs=0:exitcode=0"
    local venv
    venv="$(dirname "$(dirname "$tsan_python")")-venv"
    if ! TSAN_OPTIONS=$quiet "$venv/bin/python" -c 'import pytest, hypothesis, Cython' 2>/dev/null; then
        echo "== TSan: a virtual environment for $tsan_python in $venv (a few minutes, once)"
        rm -rf "$venv"
        TSAN_OPTIONS=$quiet "$tsan_python" -m venv "$venv" || exit 2
        # hypothesis: its newest releases have native wheels only, none for cp313t.
        TSAN_OPTIONS=$quiet "$venv/bin/python" -m pip install -q --only-binary=hypothesis \
            'hypothesis==6.155.7' pytest 'cython>=3.1' setuptools >pip.log 2>&1 \
            || { echo "pip failed:"; tail -20 pip.log; exit 2; }
    fi
    local tsan_py=$venv/bin/python
    echo "== TSan: building with -fsanitize=thread for $tsan_python"
    local started=$SECONDS
    local host_python=$python
    python=$tsan_py
    TSAN_OPTIONS=$quiet build FASTSERVER_SANITIZE=thread
    python=$host_python
    echo "   built in $((SECONDS - started)) s"
    # Until every extension declares that it runs without the GIL, importing one turns the GIL
    # back on: then the tests run with PYTHON_GIL=0, or TSan would see one thread at a time.
    local gil
    gil=$(env -u PYTHON_GIL TSAN_OPTIONS=$quiet PYTHONPATH=src "$tsan_py" -W ignore -c '
import sys, fastserver, fastserver._core, fastserver._acceptors, fastserver._stream
import fastserver._dispatch, fastserver._turns, fastserver._proxy
assert fastserver.IMPLEMENTATION.startswith("cython-"), fastserver.IMPLEMENTATION
print(int(sys._is_gil_enabled()))') || exit 2
    local gil_env=()
    if [[ $gil == 1 ]]; then
        gil_env=(PYTHON_GIL=0)
        echo "   the extensions turn the GIL on: the tests run with PYTHON_GIL=0"
    else
        echo "   the GIL stays off without PYTHON_GIL"
    fi
    local tests=${TSAN_TESTS:-}
    if [[ -z $tests ]]; then
        for candidate in tests/test_races.py tests/test_request_threads.py tests/test_stream.py \
                tests/test_servers.py tests/test_mixins.py tests/test_dispatch.py \
                tests/test_first_data.py; do  # not test_turns.py: no turns without the GIL
            [[ -e $candidate ]] && tests+="$candidate "
        done
    fi
    mkdir -p tsan-logs
    started=$SECONDS
    # shellcheck disable=SC2086
    env "${gil_env[@]}" PYTHONPATH=src \
        TSAN_OPTIONS="log_path=$scratch/tsan-logs/tsan:exitcode=0:halt_on_error=0:second_deadlock_stack=1" \
        timeout 3000 "$tsan_py" -m pytest $tests -q -p no:cacheprovider \
        -k "${TSAN_SELECT:-not python and not stdlib}" "${extra[@]}" >tsan-pytest.log 2>&1
    local rc=$?
    echo "   pytest exit $rc in $((SECONDS - started)) s: $(tail -1 tsan-pytest.log)"
    # Reports are judged here, none suppressed in TSan itself: a CPython pattern could hide one
    # of ours. The lists only label CPython's reports as known.
    "$python" - "$(dirname "$tsan_python")/../lib/tsan-suppressions-cpython.txt" \
        "$root/scripts/tsan-suppressions.txt" tsan-logs/tsan.* <<'PYTHON' || status=1
import os
import re
import sys

# A frame in fastserver's code: its extensions (CPython's inline functions compiled into them
# count: our code called them), the Cython and C sources.
ours = re.compile(r"\((_core|_acceptors|_stream|_proxy|_dispatch|_turns)\.cpython-[^ )]*\.so\+0x"
                  r"|\b(src/fastserver|csrc)/")
frame = re.compile(r"\s+#(\d+) (\S+)")


def patterns(path):
    """(kind, regex) for each line of a TSan suppressions file."""
    found = []
    for line in open(path) if os.path.exists(path) else ():
        line = line.split("#", 1)[0].strip()
        if ":" in line:
            kind, text = line.split(":", 1)
            text = re.escape(text).replace(r"\*", ".*").replace(r"\^", "^").replace(r"\$", "$")
            found.append((kind, re.compile(text)))
    return found


known = patterns(sys.argv[1]) + patterns(sys.argv[2])


def label(kind, stacks):
    """The suppression line that names this report, or None: race_top matches the first frame
    of an access below the sanitizer's interceptors, the others any frame of its stacks."""
    for name, regex in known:
        if name == "race_top" and kind == "race":
            names = [name_of(doing(lines, 1)[0]) for lines in stacks if doing(lines, 1)]
        elif name == kind or (name, kind) == ("thread", "thread leak"):
            names = [name_of(text) for lines in stacks for text in lines]
        else:
            continue
        if any(regex.search(function) for function in names):
            return f"{name}:{regex.pattern}"
    return None


def reports(path):
    report = None
    for line in open(path, errors="replace"):
        if line.startswith("WARNING: ThreadSanitizer:"):
            report = []
        if report is not None:
            report.append(line.rstrip("\n"))
            if line.startswith("SUMMARY: ThreadSanitizer:"):
                yield report
                report = None


def stacks_of(report):
    """{section: [frame lines]} for each stack of the report: the accesses' ("Write of size 8
    ... by thread T1:"), then where the memory, the mutexes and the threads were made."""
    stacks, section = {}, None
    for text in report[1:]:
        if frame.match(text) and section is not None:
            stacks[section].append(text)
        elif text.strip():
            section = text.strip()
            stacks.setdefault(section, [])
    return {name: lines for name, lines in stacks.items() if lines}


def name_of(text):
    return frame.match(text).group(2)


def doing(lines, count=3):
    """A stack's first ``count`` frames below the sanitizer's own (its interceptors)."""
    return [t for t in lines if "libsanitizer" not in t and "libtsan" not in t][:count]


# Which reports fail the run:
# - ours: one of the racing accesses is made by fastserver's code (a frame of ours within the
#   first three of an access's stack, the sanitizer's interceptors not counted);
# - CPython's, known: the accesses are CPython's own and a list names the report (its reason
#   is the list's comment), though fastserver's code may have called it: listed;
# - CPython's, reached from fastserver's code, in no list: fails until it is read and, if it
#   is CPython's, listed in scripts/tsan-suppressions.txt with the reason;
# - CPython's alone: listed.
found_ours, found_theirs = {}, {}
for path in filter(os.path.exists, sys.argv[3:]):  # no report: the glob stays as it is
    for report in reports(path):
        kind = re.sub(r" \(pid=\d+\)$", "", report[0].split("ThreadSanitizer: ", 1)[1])
        kind = {"data race": "race", "data race on vptr (ctor/dtor vs virtual call)": "race"}.get(
            kind, kind)
        stacks = stacks_of(report)
        access = [lines for name, lines in stacks.items()
                  if not name.startswith(("Thread T", "Mutex M", "Location is"))]
        access = access or list(stacks.values())  # a thread leak: where the thread was made
        why = label(kind, access)
        summary = report[-1].split("ThreadSanitizer: ", 1)[1]  # the kind and the top frame
        by_us = any(ours.search(t) for lines in access for t in doing(lines))
        reached = any(ours.search(t) for t in report if frame.match(t))
        if by_us or (reached and why is None):
            entry = found_ours.setdefault(summary, [path, report, 0])
        else:
            entry = found_theirs.setdefault(summary, [path, why, 0, reached])
        entry[2] += 1
for summary, (path, report, count) in found_ours.items():
    # The two accesses' stacks (their first frames), what the memory is, the summary; not the
    # stacks where the threads and the memory were made.
    print(f"!! x{count}, first in {path}:")
    section = ""
    for text in report:
        match = frame.match(text)
        if not match and text.strip():
            section = text.strip()
            if section.startswith(("Thread T", "Mutex M")):
                continue
        elif match and (int(match.group(1)) >= 8 or section.startswith(
                ("Location", "Thread T", "Mutex M"))):
            continue
        if text.strip():
            print("   " + text)
for summary, (path, why, count, reached) in sorted(found_theirs.items(),
                                                  key=lambda kv: str(kv[1][1])):
    whose = "CPython's, from fastserver's calls" if reached else "CPython's alone"
    print(f"   {whose} ({why or 'in no list'}), x{count}: {summary}")
print(f"   TSan: {len(found_ours)} place(s) in fastserver's code, {len(found_theirs)} in "
      f"CPython's ({sum(1 for v in found_theirs.values() if v[1])} of them in a list)")
sys.exit(1 if found_ours else 0)
PYTHON
    if ((rc != 0 && rc != 1)); then
        echo "!! pytest under TSan ended abnormally (exit $rc):"; tail -30 tsan-pytest.log
        status=1
    elif ((rc == 1)); then
        grep -E "^(FAILED|ERROR) " tsan-pytest.log | sed 's/^/   /'
    fi
}

[[ $mode == asan || $mode == all ]] && run_asan
[[ $mode == valgrind || $mode == all ]] && run_valgrind
[[ $mode == tsan ]] && run_tsan
echo "== result: $([[ $status == 0 ]] && echo clean || echo FINDINGS)"
exit $status
