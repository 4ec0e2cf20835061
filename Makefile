# Everyday targets; the sanitizer runs build in a scratch copy (scripts/sanitize.sh).
PYTHON ?= python

.PHONY: build test asan valgrind tsan sanitize lint

build:
	FASTSERVER_REQUIRE_EXTENSIONS=1 $(PYTHON) setup.py build_ext --inplace -q

test: build
	PYTHONPATH=src $(PYTHON) -m pytest tests -q

asan:
	PYTHON=$(PYTHON) scripts/sanitize.sh asan

valgrind:
	PYTHON=$(PYTHON) scripts/sanitize.sh valgrind

tsan:
	PYTHON=$(PYTHON) scripts/sanitize.sh tsan

sanitize:
	PYTHON=$(PYTHON) scripts/sanitize.sh all

lint:
	ruff check src tests bench
	@if command -v cython-lint >/dev/null; then cython-lint --max-line-length 100 src/fastserver/*.pyx src/fastserver/*.pxd; fi
	@if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh; fi
