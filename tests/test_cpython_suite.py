"""CPython's own test.test_socketserver, run with fastserver installed in place of socketserver.

Each run happens in a fresh interpreter (install() must come before the suite imports
socketserver). Whatever passes on the standard library must pass on both cores.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

if importlib.util.find_spec("test.test_socketserver") is None:
    pytest.skip("this interpreter ships without CPython's test package (test.test_socketserver)",
                allow_module_level=True)

RUNNER = r"""
import json, sys, unittest
core = sys.argv[1]
if core != "stdlib":
    import fastserver
    fastserver._use_core(core)
    fastserver.install()
import test.support
test.support.verbose = False
import test.test_socketserver as suite
if core != "stdlib":
    assert suite.socketserver is fastserver, "the suite did not get fastserver"
    assert fastserver.IMPLEMENTATION.startswith(core), fastserver.IMPLEMENTATION


class Recorder(unittest.TextTestResult):
    outcomes = {}

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes[test.id()] = "passed"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = "failed"

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[test.id()] = "failed"

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[test.id()] = "skipped"


tests = unittest.defaultTestLoader.loadTestsFromModule(suite)
unittest.TextTestRunner(stream=sys.stderr, resultclass=Recorder, verbosity=0).run(tests)
print(json.dumps(Recorder.outcomes))
"""


def run_suite(core):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", RUNNER, core], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def reference():
    outcomes, _ = run_suite("stdlib")
    assert outcomes, "the standard library's run recorded no test"
    return outcomes


@pytest.mark.parametrize("core", ["cython", "python"])
def test_cpython_socketserver_suite(core, reference):
    import fastserver

    if core not in fastserver._cores.CORES:
        if os.environ.get("FASTSERVER_NO_EXTENSIONS", "") in ("", "0"):
            pytest.fail("the compiled core is missing from this installation")
        pytest.skip("FASTSERVER_NO_EXTENSIONS is set: no compiled core to run")
    outcomes, log = run_suite(core)
    passed_on_stdlib = {name for name, result in reference.items() if result == "passed"}
    lost = sorted(name for name in passed_on_stdlib if outcomes.get(name) != "passed")
    assert not lost, f"pass on the stdlib but not on fastserver ({core}): {lost}\n{log[-4000:]}"
    assert len(passed_on_stdlib) >= 20  # the suite really ran, not an empty shell
