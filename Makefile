# `make demo`: install, build the offline corpus, train, beam-search decode, report BLEU.
# `make test`: install and run the test suite (.ci/run calls exactly this).
PY := .venv/bin/python

.PHONY: setup demo test
setup: .venv/.installed
.venv/.installed: requirements.txt setup.py scripts/install.sh
	bash scripts/install.sh

demo: setup
	$(PY) scripts/run_demo.py

# One worker per core, each test file on one worker (its module fixtures built once) in the order
# tests/conftest.py gives (the longest first), one torch thread per worker (two 2-thread workers on
# 2 cores made OpenMP wait on each other); the slowest tests listed at the end.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -v -p no:cacheprovider -n auto --dist loadfile --no-loadscope-reorder \
		--durations=20
