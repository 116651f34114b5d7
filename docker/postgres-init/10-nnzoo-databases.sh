#!/bin/bash
# Runs once, from /docker-entrypoint-initdb.d, when the postgres-data volume is empty.
# One PostgreSQL server holds three databases, each owned by its own login role:
#   airflow      Airflow metadata DB and Celery result backend   (role airflow)
#   mlflow       MLflow tracking + model registry backend store  (role mlflow)
#   mlflow_auth  MLflow basic-auth users and permissions         (role mlflow)
# The passwords come from the container environment (docker/.env); psql binds them as
# variables (:'name' quotes them), so nothing here holds a secret.
# The image's entrypoint sources this file unless it is executable: no `set -u` here.
set -e

if [ -z "${AIRFLOW_DB_PASSWORD:-}" ] || [ -z "${MLFLOW_DB_PASSWORD:-}" ]; then
    echo "10-nnzoo-databases.sh: AIRFLOW_DB_PASSWORD and MLFLOW_DB_PASSWORD must be set" >&2
    exit 1
fi

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
     -v airflow_password="$AIRFLOW_DB_PASSWORD" \
     -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
SQL
