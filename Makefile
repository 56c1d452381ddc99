# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test screenshots bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/andon demo

# Lint first: CI keeps ruff and mypy clean, not only the tests green.
test: lint
	$(BIN)/python -m pytest -q

screenshots: $(STAMP)
	$(BIN)/python -m tui.screenshots screenshots

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.health
	$(BIN)/python -m benchmarks.health_dashboard
	$(BIN)/python -m benchmarks.line
	$(BIN)/python -m benchmarks.line_check
	$(BIN)/python -m benchmarks.migrations

lint: $(STAMP)
	$(BIN)/ruff check backend tui tests benchmarks
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV)
