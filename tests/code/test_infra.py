"""The production stack's files, checked without Docker or Kubernetes (neither runs on this machine):
the compose file parses and names the services the README documents, no credential has a default, the
env template lists every variable, and the GPU work-pool template passes Prefect's own validation."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.server.auth.config import read_auth_config
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.utilities.templating import apply_values

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INFRA = PROJECT_ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
GPU_TEMPLATE = INFRA / "k8s" / "gpu-work-pool-template.json"
AUTH_INI = INFRA / "mlflow-auth.ini"
README = PROJECT_ROOT / "README.md"

# ${VAR}, ${VAR:-default}, ${VAR:?message}; "$${VAR}" is an escape for the container's shell, not compose.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
CREDENTIAL_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|ACCESS_KEY|ACCESS_KEY_ID|AUTH_STRING|_USER|USERNAME)$")
PUBLISHING_SERVICES = {"mlflow", "prefect-server", "minio"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _readme_services() -> list[str]:
    """Service names in the first column of the service table of README's "Running in production"."""
    text = README.read_text()
    match = re.search(r"^## Running in production\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "README.md has no '## Running in production' section"
    return re.findall(r"^\| `([a-z0-9-]+)` \|", match.group(1), re.M)


def test_compose_names_every_service_the_readme_documents(compose: dict[str, Any]) -> None:
    documented = _readme_services()
    assert documented, "the README section lists no services"
    assert sorted(documented) == sorted(compose["services"])


def test_stack_has_the_services_of_the_issue(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "minio-create-bucket", "mlflow", "prefect-server", "prefect-worker",
            "dask-scheduler", "dask-worker"} <= set(services)  # fmt: skip
    assert services["dask-worker"]["deploy"]["replicas"] == 2
    assert "--app-name" in services["mlflow"]["command"] and "basic-auth" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "PREFECT_SERVER_API_AUTH_STRING" in services["prefect-server"]["environment"]
    assert services["prefect-worker"]["command"][-4:] == ["--pool", "steelqc-process", "--type", "process"]
    assert services["minio-create-bucket"]["restart"] == "no"


def test_every_credential_comes_from_the_env_file_without_a_default(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    references = VARIABLE.findall(text)
    credentials = {name for name, _, _ in references if CREDENTIAL_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "PREFECT_AUTH_STRING"} <= credentials
    for name, operator, message in references:
        if name in credentials:
            assert operator == ":?" and message == f"set {name} in infra/.env", f"${{{name}}} must be ${{{name}:?...}}"
    for service_name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if CREDENTIAL_NAME.search(key):
                assert VARIABLE.search(str(value)), f"{service_name}.{key} holds a literal credential"


def test_env_example_lists_every_variable_and_no_credential_value(compose: dict[str, Any]) -> None:
    example = _env_example()
    used = {name for name, _, _ in VARIABLE.findall(COMPOSE.read_text())}
    assert sorted(used - set(example)) == []
    assert sorted(set(example) - used) == []
    filled = [name for name, value in example.items() if CREDENTIAL_NAME.search(name) and value]
    assert filled == [], "credentials in .env.example must stay empty so compose refuses to start"


def test_only_the_authenticated_front_doors_publish_ports(compose: dict[str, Any]) -> None:
    publishing = {name for name, service in compose["services"].items() if service.get("ports")}
    assert publishing == PUBLISHING_SERVICES
    for name in publishing:
        for port in compose["services"][name]["ports"]:
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("postgres", "dask-scheduler", "dask-worker", "prefect-worker"):
        assert compose["services"][name]["networks"] == ["backend"]


def test_mlflow_auth_config_takes_the_admin_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = configparser.ConfigParser()
    parser.read(AUTH_INI)
    assert "admin_password" not in parser["mlflow"] and "admin_username" not in parser["mlflow"]
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(AUTH_INI))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "qa-admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "a-long-admin-password")
    config = read_auth_config()
    assert (config.admin_username, config.admin_password) == ("qa-admin", "a-long-admin-password")
    assert config.default_permission == "READ"
    assert config.database_uri == "sqlite:////mlflow-auth/basic_auth.db"
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "mlflow-auth:/mlflow-auth" in compose["services"]["mlflow"]["volumes"]


def test_dockerfile_builds_the_pinned_steelqc_image() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install -c constraints.txt '.[server]'" in dockerfile
    assert re.search(r"^USER steelqc$", dockerfile, re.M)


def test_gpu_work_pool_template_is_a_valid_kubernetes_base_job_template() -> None:
    template = json.loads(GPU_TEMPLATE.read_text())
    assert set(template) == {"job_configuration", "variables"}
    WorkPoolCreate(name="steelqc-gpu", type="kubernetes", base_job_template=template)  # Prefect's own check

    defaults = {
        name: spec["default"] for name, spec in template["variables"]["properties"].items() if "default" in spec
    }
    rendered = apply_values(template["job_configuration"], defaults)
    pod = rendered["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["envFrom"] == [{"secretRef": {"name": "steelqc-credentials"}}]
    assert rendered["job_manifest"]["kind"] == "Job"
