# `make demo`: install, build the offline corpus, train, beam-search decode, report BLEU.
# `make test`: install and run the test suite (.ci/run calls exactly this).
PY := .venv/bin/python

.PHONY: setup demo test
setup: .venv/.installed
.venv/.installed: requirements.txt setup.py scripts/install.sh
	bash scripts/install.sh

demo: setup
	$(PY) scripts/run_demo.py

test: setup
	$(PY) -m pytest tests -v -p no:cacheprovider
