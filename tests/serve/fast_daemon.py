"""dagster-daemon for tests: the backfill daemon's loop runs every 2 s instead of 30 s.

Dagster has no setting for that interval: dagster._daemon.backfill reads
controller.DEFAULT_DAEMON_INTERVAL_SECONDS at each loop, so this patches it before the CLI
starts. Nothing else changes; `condor serve` runs the plain daemon.
"""

import sys

import dagster._daemon.controller as controller

controller.DEFAULT_DAEMON_INTERVAL_SECONDS = 2

from dagster._daemon.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
