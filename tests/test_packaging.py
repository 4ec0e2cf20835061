"""The distributions: an sdist that has everything a build needs, a wheel with the compiled core.

``python -m build`` makes the sdist from the source tree, then the wheel from that sdist in a
fresh directory (so a file missing from the sdist breaks the wheel), and must print no warning;
the sdist must hold every file the README names (its picture is linked by an absolute address);
the wheel is installed into a fresh virtual environment, where the compiled core must be the one
that runs. The manylinux wheels are built and tested against the whole suite by
scripts/wheels.sh (.ci/run runs it). This is the slowest test (one
compile, two isolated build environments, one virtual environment): about a minute.

The same file checks what setup.py records of a build (fastserver/_build.json): the installed
build's poller against the compiled core's, a build whose compiler fails (``CC=false``) reported
by ``python -m fastserver``, and a bad ``FASTSERVER_POLLER`` refused. Those builds run ``pip
wheel`` on a copy of the tree, so that the checkout's own build/ is left alone.

It needs ``build`` (in the ``test`` extra) and a source checkout, and it is skipped under
``FASTSERVER_NO_EXTENSIONS`` (the pure-core run of the same suite).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 240  # a cold pip cache on a slow machine; locally it takes well under a minute


def _no_extensions():
    return os.environ.get("FASTSERVER_NO_EXTENSIONS", "") not in ("", "0")


def _build_available():
    # Run from elsewhere: a source tree's own build/ directory would pass for the package.
    done = subprocess.run([sys.executable, "-m", "build", "--version"], capture_output=True,
                          cwd=pathlib.Path(sys.executable).parent, timeout=60)
    return done.returncode == 0


pytestmark = [
    pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file() or not (ROOT / "csrc").is_dir(),
                       reason="needs the source checkout (pyproject.toml, csrc/)"),
    pytest.mark.skipif(_no_extensions(),
                       reason="FASTSERVER_NO_EXTENSIONS is set: the packaging test builds the "
                              "compiled core and runs with the compiled-core run"),
]


def _environment(*, drop=(), **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTSERVER_NO_EXTENSIONS", "PYTHONPATH", *drop)}
    env.update(extra)
    return env


def _clean_copy(dest):
    """The source tree in dest: git's files (tracked, and untracked ones it does not ignore) in a
    git checkout, else the tree less what builds and tools leave in it."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, timeout=60) \
        if shutil.which("git") else None
    if listed is not None and listed.returncode == 0 and listed.stdout:
        names = listed.stdout.decode().split("\0")
        # and the C that cythonize made, with its times: it need not run again
        names += [p.relative_to(ROOT).as_posix() for p in ROOT.glob("src/fastserver/*.c")]
        for name in filter(None, names):
            source = ROOT / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
        return dest
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "wheelhouse", "*.egg-info", "__pycache__", "*.so", "*.pyd",
        ".venv*", "venv", ".*_cache", ".hypothesis", ".benchmarks", "_build.json"))
    return dest


@pytest.fixture(scope="module")
def build_run(tmp_path_factory):
    """(sdist path, wheel path, what python -m build printed), the wheel built from the sdist."""
    if not _build_available():
        pytest.fail("'build' is not installed: pip install '.[test]' installs it")
    out = tmp_path_factory.mktemp("dist")
    # From a copy without the checkout's build outputs: setuptools puts the files listed in an
    # old src/*.egg-info/SOURCES.txt (left by any earlier install) into the sdist, whatever
    # MANIFEST.in says, and a file missing from MANIFEST.in would go unnoticed here.
    tree = _clean_copy(tmp_path_factory.mktemp("tree") / "fastserver")
    # PYTHONDONTWRITEBYTECODE makes setuptools warn that it skips byte-compiling: not the
    # package's warning, so the build runs without it
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
                          capture_output=True, text=True, cwd=out, timeout=BUILD_TIMEOUT,
                          env=_environment(drop=("PYTHONDONTWRITEBYTECODE",),
                                           FASTSERVER_REQUIRE_EXTENSIONS="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(os.listdir(out))
    return sdists[0], wheels[0], done.stdout + done.stderr


@pytest.fixture(scope="module")
def dists(build_run):
    """(sdist path, wheel path), the wheel built from the sdist."""
    return build_run[:2]


def test_build_prints_no_warning(build_run):
    *_, output = build_run
    warnings = [line for line in output.splitlines() if "warn" in line.lower()]
    assert not warnings, "\n".join(warnings)


# compiled by python -m fastserver.bench on the user's machine, so shipped as sources
BENCH_C_SOURCES = ["src/fastserver/bench/_loadgen.c", "src/fastserver/bench/_floor.c"]


def _sources(pattern):
    return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern))


def test_sdist_has_what_a_build_needs(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        # "fastserver-0.1.0/csrc/poller.c" -> "csrc/poller.c"
        names = {name.partition("/")[2] for name in tar.getnames()}
    needed = (_sources("csrc/*.c") + _sources("csrc/*.h") + _sources("src/fastserver/*.pyx")
              + _sources("src/fastserver/*.pxd") + _sources("src/fastserver/*.py"))
    assert any(name.endswith(".c") for name in needed) and any(n.endswith(".pyx") for n in needed)
    needed += ["src/fastserver/py.typed", "src/fastserver/_core.pyi", "setup.py",
               "pyproject.toml", "README.md", "LICENSE"] + BENCH_C_SOURCES
    missing = sorted(set(needed) - names)
    assert not missing, f"missing from {sdist.name}: {missing}"


# README.md's links to the project's own files that are no file of this tree: its picture, by an
# absolute address (the README is the package's description on PyPI, where a relative one breaks)
REPOSITORY_FILE = re.compile(r"^https://github\.com/[^/]+/fastserver/raw/main/(?P<path>.+)$")


def _readme_names(readme):
    """Every path of this tree that README.md names: its links (relative, or to a file of the
    repository), and the paths it quotes as code (`bench/README.md`, `.ci/run`)."""
    names = set()
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        repository = REPOSITORY_FILE.match(target)
        if repository:
            names.add(repository["path"])
        elif "://" not in target and not target.startswith("#"):
            names.add(target.split("#")[0])
    for quoted in re.findall(r"`([^`\s]+)`", readme):
        if "/" in quoted or (ROOT / quoted).is_file():
            names.add(quoted)
    # (an absolute path, such as the chroot's /proc, is the machine's, not the tree's)
    return {name.rstrip("/") for name in names
            if name and not name.startswith("/") and (ROOT / name).exists()}


def test_sdist_has_every_file_the_readme_names(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}
        readme = tar.extractfile(next(n for n in tar.getnames()
                                      if n.partition("/")[2] == "README.md")).read().decode()
    named = _readme_names(readme)
    # the picture and the files of its section, the benchmarks' report, the test command's tree
    for name in ("bench/bench.png", "bench/README.md", "tests", ".ci/run"):
        assert name in named, f"README.md no longer names {name}: update this test"
    wanted = named | {"Makefile", *_sources("scripts/*.sh"), *_sources("bench/*")}
    missing = sorted(name for name in wanted if name not in names)
    assert not missing, f"missing from {sdist.name}: {missing}"
    # a picture by a relative link shows nowhere but in a checkout
    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert pictures and all(REPOSITORY_FILE.match(p) for p in pictures), pictures


def test_metadata_has_the_license_as_an_spdx_expression(dists):
    sdist, wheel = dists
    with zipfile.ZipFile(wheel) as whl:
        metadata = whl.read(next(n for n in whl.namelist()
                                 if n.endswith(".dist-info/METADATA"))).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in whl.namelist())
    headers = metadata.partition("\n\n")[0].splitlines()
    assert "License-Expression: MIT" in headers, headers
    assert "License-File: LICENSE" in headers, headers
    assert not [h for h in headers if h.startswith(("License:", "Classifier: License"))], headers


def test_wheel_has_the_compiled_core_and_types(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    compiled = {name.split("/")[1].split(".")[0] for name in names
                if name.startswith("fastserver/") and name.endswith((".so", ".pyd"))}
    assert "_core" in compiled, f"no compiled core in {wheel.name}: {sorted(names)}"
    for pyx in _sources("src/fastserver/*.pyx"):
        module = pathlib.PurePosixPath(pyx).stem
        assert module in compiled, f"{pyx} has no compiled module in {wheel.name}"
        assert f"fastserver/{module}.pyi" in names, f"{pyx} has no stub (.pyi) in {wheel.name}"
    for name in ("fastserver/py.typed", "fastserver/_core.pyi", "fastserver/__init__.py",
                 "fastserver/http.py", *(path.removeprefix("src/") for path in BENCH_C_SOURCES)):
        assert name in names, f"{name} is missing from {wheel.name}"
    assert not wheel.name.endswith("-none-any.whl"), "a pure wheel: the core was not built"


def test_wheel_installs_and_runs_the_compiled_core(dists, tmp_path):
    _, wheel = dists
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = "Scripts" if os.name == "nt" else "bin"
    python = str(venv / bindir / ("python.exe" if os.name == "nt" else "python"))
    env = _environment()
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    check = ("import fastserver, sys\n"
             "import os\n"
             "here = os.path.realpath(fastserver.__file__)\n"
             "assert here.startswith(os.path.realpath(sys.prefix)), here\n"
             "print(fastserver.IMPLEMENTATION)\n")
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cython-"), done.stdout
    done = subprocess.run([python, "-m", "fastserver.http", "--help"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60, env=env)
    assert done.returncode == 0 and "--directory" in done.stdout, done.stderr


# --- what setup.py records of a build ---------------------------------------------------------

# The poller each platform's own build waits on (compat.h); FASTSERVER_POLLER=poll: "poll".
PLATFORM_POLLER = ("epoll" if sys.platform.startswith("linux") else
                   "kqueue" if sys.platform == "darwin" or "bsd" in sys.platform else "poll")


def _installed_record():
    import fastserver

    path = pathlib.Path(fastserver.__file__).with_name("_build.json")
    assert path.is_file(), f"the build wrote no record: {path} is missing"
    return json.loads(path.read_text())


def test_installed_build_reports_the_poller_it_was_built_with():
    import fastserver

    record = _installed_record()
    assert not record["failed"], record
    asked = os.environ.get("FASTSERVER_POLLER")
    if asked is not None:  # the suite runs on the build it was asked to test
        assert record["poller"] == (asked or "platform"), record
    poller = PLATFORM_POLLER if record["poller"] == "platform" else record["poller"]
    assert fastserver._cores.CORES["cython"].loops.POLLER == poller
    assert fastserver._use_core("cython") == f"cython-{poller}"
    import fastserver._acceptors

    # request threads accept for themselves only on Linux's own build (epoll, EPOLLEXCLUSIVE)
    assert fastserver._acceptors.SUPPORTED == (poller == "epoll")


def test_python_m_fastserver_says_when_no_extensions_picked_the_pure_core(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastserver"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60,
                          env=_environment(FASTSERVER_NO_EXTENSIONS="1"))
    assert done.returncode == 0, done.stderr
    first, *notes = done.stdout.splitlines()
    assert ": python-" in first, done.stdout
    assert len(notes) == 1 and "FASTSERVER_NO_EXTENSIONS=1 is set" in notes[0], done.stdout
    assert f"cython-{_installed_record()['poller']}".replace("platform", PLATFORM_POLLER) \
        in notes[0], done.stdout


def _copy_of_the_tree(dest):
    """What a build reads, without the checkout's build outputs (the generated .c files stay,
    with their times, so that cythonize need not run again)."""
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "csrc", dest / "csrc")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "_build.json", "__pycache__", "*.egg-info", "*.html"))
    return dest


def _pip_wheel(tree, out, env):
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--wheel-dir", str(out), str(tree)],
                          capture_output=True, text=True, cwd=out, timeout=BUILD_TIMEOUT, env=env)


def test_a_failed_compile_is_recorded_and_reported(tmp_path):
    tree = _copy_of_the_tree(tmp_path)
    out = tmp_path / "wheel"
    out.mkdir()
    done = _pip_wheel(tree, out, _environment(drop=("FASTSERVER_REQUIRE_EXTENSIONS",),
                                              CC="false"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as whl:
        assert not [name for name in whl.namelist() if name.endswith(".so")]
        whl.extractall(site)
    record = json.loads((site / "fastserver" / "_build.json").read_text())
    assert record["built"] == [] and record["compiler"] == "false", record
    assert "fastserver._core" in record["failed"], record
    done = subprocess.run([sys.executable, "-m", "fastserver"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, env=_environment(PYTHONPATH=str(site)))
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert report.startswith("fastserver 0.1.0: python-"), report
    assert "The compiled core is not installed" in report, report
    core_line = next(line for line in report.splitlines() if "fastserver._core:" in line)
    assert "'false'" in core_line and "(compiler: false)" in core_line, report
    assert "C compiler" in report, report


def test_a_bad_poller_fails_the_build(tmp_path):
    tree = _copy_of_the_tree(tmp_path)
    out = tmp_path / "wheel"
    out.mkdir()
    done = _pip_wheel(tree, out, _environment(drop=("FASTSERVER_REQUIRE_EXTENSIONS",),
                                              FASTSERVER_POLLER="epol"))
    assert done.returncode != 0
    assert "FASTSERVER_POLLER='epol' is not a poller this build knows" in done.stdout + \
        done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    assert not list(out.glob("*.whl"))
