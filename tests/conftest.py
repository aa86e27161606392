"""Shared fixtures: small and literal. Real SQLite files, real Enron mail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]


# CI runs the property tests on a fixed set of examples (a red CI run then means a change broke
# something, not that a new random example turned up); `make test` elsewhere keeps exploring.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("EMAILWB_HYPOTHESIS_PROFILE", "default"))


def _enron_dir() -> Path:
    env = os.environ.get("EMAILWB_ENRON_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "enron"


@pytest.fixture(scope="session")
def enron_dir() -> Path:
    """The 6,446-message Enron dev set beside the checkout (../shared/data/enron)."""
    path = _enron_dir()
    if not (path / "MANIFEST.tsv").exists():
        pytest.fail(
            f"Enron data not found at {path}: set EMAILWB_ENRON_DIR or place ../shared beside the repo"
        )
    return path


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample of real Enron mail shipped in data/."""
    return REPO / "data" / "enron-sample"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "emailwb.sqlite"


@pytest.fixture
def store(db_path: Path):
    """A real, migrated SQLite store in a temporary folder."""
    from emailwb.store.database import Store

    s = Store(db_path)
    try:
        yield s
    finally:
        s.close()
