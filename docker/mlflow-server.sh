#!/bin/sh
# MLflow tracking server of the compose stack (docker/compose.yaml, service `mlflow`):
# backend and model registry on PostgreSQL, artifacts served by the server itself
# (--serve-artifacts, --artifacts-destination on the mlflow-artifacts volume), and
# MLflow's basic auth (--app-name basic-auth).
#
# Basic auth reads an ini file (MLFLOW_AUTH_CONFIG_PATH). It is written here, at
# container start, from the environment, into a private temporary folder: no password
# is stored in the image or in the repository. The admin user is created on the first
# start against an empty auth database; later changes of MLFLOW_ADMIN_PASSWORD are
# ignored by MLflow (change it with the update-password API instead).
set -eu

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${MLFLOW_ADMIN_PASSWORD:?MLFLOW_ADMIN_PASSWORD is not set}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?MLFLOW_FLASK_SERVER_SECRET_KEY is not set}"

db_user="${MLFLOW_DB_USER:-mlflow}"
db_host="${MLFLOW_DB_HOST:-postgres:5432}"
backend_uri="postgresql://${db_user}:${MLFLOW_DB_PASSWORD}@${db_host}/${MLFLOW_DB_NAME:-mlflow}"
auth_uri="postgresql://${db_user}:${MLFLOW_DB_PASSWORD}@${db_host}/${MLFLOW_AUTH_DB_NAME:-mlflow_auth}"

umask 077
auth_dir="$(mktemp -d)"
export MLFLOW_AUTH_CONFIG_PATH="${auth_dir}/basic_auth.ini"
# configparser interpolates '%': the passwords must not contain it (token_urlsafe never does).
cat >"${MLFLOW_AUTH_CONFIG_PATH}" <<INI
[mlflow]
default_permission = ${MLFLOW_DEFAULT_PERMISSION:-READ}
database_uri = ${auth_uri}
admin_username = ${MLFLOW_ADMIN_USERNAME:-admin}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

# The store URI goes through the environment (mlflow server's --backend-store-uri reads
# MLFLOW_BACKEND_STORE_URI), so the password is not on the process command line.
export MLFLOW_BACKEND_STORE_URI="${backend_uri}"
exec mlflow server \
    --app-name basic-auth \
    --serve-artifacts \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/opt/nnzoo/mlflow-artifacts}" \
    --host 0.0.0.0 \
    --port "${MLFLOW_SERVER_PORT:-5000}" \
    --workers "${MLFLOW_SERVER_WORKERS:-2}"
