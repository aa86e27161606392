# emailwb: `make run` sets up and runs the main job; `make test` sets up and runs the tests.
.PHONY: setup run test lint bench

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/emailwb run --db emailwb.sqlite data/enron-sample

test: setup lint
	.venv/bin/python -m pytest -q -ra

# style, types and the house's layers (run by `make test`, so CI checks them too)
lint: setup
	.venv/bin/ruff check emailwb tests bench gold
	.venv/bin/ruff format --check emailwb tests bench gold
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python bench/ingest.py
	.venv/bin/python bench/overhead.py
