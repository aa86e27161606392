# emailwb: `make run` sets up and runs the main job; `make test` sets up and runs the tests.
.PHONY: setup run test lint bench

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/emailwb run --db emailwb.sqlite data/enron-sample

test: setup
	.venv/bin/python -m pytest -q -ra

lint: setup
	.venv/bin/ruff check emailwb tests bench

bench: setup
	.venv/bin/python bench/ingest.py
	.venv/bin/python bench/overhead.py
