"""Where the project keeps its data, models and Dagster instance (overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path


def condor_home() -> Path:
    """Root of everything local: CONDOR_HOME, default `.condor` in the working directory."""
    return Path(os.environ.get("CONDOR_HOME") or Path.cwd() / ".condor").expanduser()


def data_dir() -> Path:
    """Parquet outputs, exports and the LLM response cache: CONDOR_DATA_DIR or <home>/data."""
    return Path(os.environ.get("CONDOR_DATA_DIR") or condor_home() / "data").expanduser()


def models_dir() -> Path:
    """Locally built models (the tiny test model): <home>/models."""
    return condor_home() / "models"
