"""Running the pipeline as a service: PostgreSQL, dagster-webserver and dagster-daemon."""
