# Two targets a newcomer needs. Each creates .venv and installs the project into it when needed
# (again only when pyproject.toml changes), so a second run starts at once.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

demo: $(STAMP)
	$(VENV)/bin/landscape --help

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)
