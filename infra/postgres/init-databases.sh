#!/bin/sh
# One role and one database per service (MLflow, Prefect), passwords from infra/.env. The postgres image
# runs this once, on the first start of an empty data volume (/docker-entrypoint-initdb.d); psql's
# :"name" / :'value' quoting keeps odd characters in names and passwords harmless.
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  -v mlflow_user="$MLFLOW_DB_USER" -v mlflow_password="$MLFLOW_DB_PASSWORD" \
  -v prefect_user="$PREFECT_DB_USER" -v prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER :"mlflow_user";
CREATE ROLE :"prefect_user" LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER :"prefect_user";
\connect prefect
-- Prefect's migrations create it too; doing it as the superuser avoids relying on it being trusted.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
