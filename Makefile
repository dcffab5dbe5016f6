# The two set-up commands of the README. Both install into ./.venv first (idempotent).
VENV := .venv/bin

.PHONY: install demo test test-slow bench

install:
	bash scripts/install.sh

# The main job: the whole Aloe recipe (recipes/demo.yaml) on the embedded default model, offline, CPU.
demo: install
	$(VENV)/aloe run

test: install
	$(VENV)/python -m pytest -q

# Tests that load the real embedded model (minutes).
test-slow: install
	$(VENV)/python -m pytest -q -m slow
