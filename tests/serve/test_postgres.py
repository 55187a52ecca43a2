"""The PostgreSQL `condor serve` starts when none is configured (Debian's server binaries)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from condor_dagster.serving.postgres import LocalPostgres
from condor_dagster.serving.serve import external_postgres_env


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    # Under /tmp: as root the server runs as the postgres user, who must reach it.
    path = Path(tempfile.mkdtemp(prefix="condor-test-pg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_keeps_its_data_and_password_across_restarts(pg_dir: Path, tmp_path: Path):
    first = LocalPostgres(pg_dir, log_path=tmp_path / "pg.log", durable=False).start()
    try:
        with psycopg2.connect(first.url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        password = first.password
    finally:
        first.stop()
    assert first.process is None

    second = LocalPostgres(pg_dir, log_path=tmp_path / "pg.log", durable=False).start()
    try:
        assert second.password == password
        assert second.env()["DAGSTER_PG_PASSWORD"] == password
        with psycopg2.connect(second.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT x FROM kept")
            assert cur.fetchall() == [(42,)]
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(second.url.replace(password, "wrong"), connect_timeout=5)
    finally:
        second.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to the postgres user")
def test_as_root_an_unreachable_data_dir_is_refused_with_the_fix(tmp_path: Path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(RuntimeError, match=r"chmod o\+x"):
        LocalPostgres(private / "data", log_path=tmp_path / "pg.log").start()


def test_connection_settings_of_a_server_the_user_runs():
    assert external_postgres_env({}) is None
    assert external_postgres_env({"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USER": "dagster"}) == {
        "DAGSTER_PG_HOST": "db",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "dagster",
    }
    with pytest.raises(ValueError, match="DAGSTER_PG_USER is not"):
        external_postgres_env({"DAGSTER_PG_HOST": "db"})
    with pytest.raises(ValueError, match="DAGSTER_PG_PORT must be a port number"):
        external_postgres_env(
            {"DAGSTER_PG_HOST": "h", "DAGSTER_PG_USER": "u", "DAGSTER_PG_PORT": "x"}
        )
