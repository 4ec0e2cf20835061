"""The distributions: an sdist that has everything a build needs, a wheel with the compiled core.

``python -m build`` makes the sdist from the source tree, then the wheel from that sdist (so a
file missing from the sdist breaks the wheel); the wheel is installed into a fresh virtual
environment, where the compiled core must be the one that runs. This is the slowest test (one
compile, two isolated build environments, one virtual environment): about a minute.

It needs ``build`` (``pip install build``; not part of the ``test`` extra) and a source checkout,
and it is skipped under ``FASTSERVER_NO_EXTENSIONS`` (the pure-core run of the same suite).
"""

import os
import pathlib
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
    pytest.mark.skipif(not _build_available(),
                       reason="'build' is not installed (pip install build)"),
]


def _environment(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTSERVER_NO_EXTENSIONS", "PYTHONPATH")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist path, wheel path), the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, cwd=out, timeout=BUILD_TIMEOUT,
                          env=_environment(FASTSERVER_REQUIRE_EXTENSIONS="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(os.listdir(out))
    return sdists[0], wheels[0]


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
