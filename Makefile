# Two commands do everything on a fresh machine:
#   make demo   set up, then train -> export -> build -> verify on an emulated Cortex-M4
#   make test   set up, then run the test suite
PY := .venv/bin/python

.PHONY: setup demo test test-fast clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) examples/har_mlp.py --out demo_out

test: setup
	$(PY) -m pytest -q -n 2

test-fast: setup
	$(PY) -m pytest -q -n 2 -m "not slow"

clean:
	rm -rf demo_out build dist .pytest_cache
