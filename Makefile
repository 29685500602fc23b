# The two set-up commands from the README: `make demo` and `make test`.
# Both bootstrap everything they need on a fresh Debian/Ubuntu machine.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest system venv clean

system:
	@scripts/ensure-system-packages.sh

$(STAMP): pyproject.toml | system
	@scripts/ensure-venv.sh "$(PY)" "$(VENV)"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nigehbaan demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy --python-version 3.10 proto hardware edge_agent ota
	$(VENV)/bin/mypy --python-version 3.11 fleet_server simulators tests

pytest: $(STAMP)
	# Most tests wait on brokers, servers and browsers rather than the CPU: four workers,
	# one test file each at a time (module fixtures stay per file), fit two cores.
	NIGEHBAAN_REQUIRE_BROWSER=1 $(VENV)/bin/pytest -n 4 --dist loadfile

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
