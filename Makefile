# Two targets a newcomer needs. Each creates .venv and installs the project into it when needed
# (again only when pyproject.toml changes), so a second run starts at once.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

# The embedded end-to-end run: checkpoints, results files and Figs. 2, 5, 6, 7 in demo/; the
# figures are then copied into docs/figures/, so the README shows what the current code draws.
FIGURES := fig2.png fig5.png fig6.png fig7.png

demo: $(STAMP)
	$(VENV)/bin/landscape demo --out demo
	mkdir -p docs/figures
	cp $(addprefix demo/,$(FIGURES)) docs/figures/

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)
