# The two set-up commands of the README. Both install into ./.venv first (idempotent).
VENV := .venv/bin

.PHONY: install demo test test-slow bench

install:
	bash scripts/install.sh

# The main job on the embedded default model (offline, CPU).
demo: install
	$(VENV)/aloe eval --benchmarks all

test: install
	$(VENV)/python -m pytest -q

# Tests that load the real embedded model (minutes).
test-slow: install
	$(VENV)/python -m pytest -q -m slow
