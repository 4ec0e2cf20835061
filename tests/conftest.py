"""The fixtures every behaviour test takes.

``ss``: the module under test, which is fastserver on its compiled core (``cython``), fastserver on
its pure core (``python``), or the standard library's ``socketserver`` (``stdlib``), the reference
each test must pass on. ``fast`` is the same without the stdlib, for what only fastserver
promises; ``core`` hands the test the core itself (``fastserver._cores.Core``: its loops, streams
and PROXY parser), made active for the test. Switching the core switches every compiled part with
it. The helpers are in ``helpers.py``.
"""

import shutil
import tempfile

import pytest
from helpers import using

import fastserver


@pytest.fixture(params=["cython", "python", "stdlib"])
def ss(request):
    """The module under test: fastserver (compiled core, pure core) or the stdlib."""
    with using(request.param) as module:
        yield module


@pytest.fixture(params=["cython", "python"])
def fast(request):
    """fastserver on each of its cores: for what the stdlib does not promise."""
    with using(request.param) as module:
        yield module


@pytest.fixture(params=["cython", "python"])
def core(request):
    """Each of fastserver's cores, active while the test runs."""
    with using(request.param):
        yield fastserver._cores.active


@pytest.fixture
def sock_dir():
    """A short temporary directory for Unix socket paths (sun_path holds about 100 bytes)."""
    path = tempfile.mkdtemp(prefix="fs-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)
