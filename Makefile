# Two targets a newcomer needs. Each creates .venv and installs the project into it when needed
# (again only when pyproject.toml changes), so a second run starts at once.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

# Until `landscape demo` lands: train the embedded default with Adam and DualAdam into demo/.
demo: $(STAMP)
	$(VENV)/bin/landscape --help
	$(VENV)/bin/landscape train --model cnn --dataset digits --optimizer adam --out demo/cnn-digits-adam-s0.pt
	$(VENV)/bin/landscape train --model cnn --dataset digits --optimizer dualadam --out demo/cnn-digits-dualadam-s0.pt

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)
