"""The deployment files agree with the code: probes and health checks name real open routes,
every ATP_* variable they set is one config.py reads and parses, ports, replicas, PDB, security
settings and the image name line up across the Dockerfile, Kubernetes and compose."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

from atp_service.app import create_app
from atp_service.config import Settings, parse_api_keys
from atp_service.erpsim import config as erpsim_config

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
NAME = "atp-service"


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s, keyed ``Kind/name``."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def config_names() -> set[str]:
    """The ATP_* names config.py reads (``get("ATP_...")``), from its source."""
    source = (ROOT / "atp_service" / "config.py").read_text()
    return set(re.findall(r'get\("(ATP_[A-Z0-9_]+)"\)', source))


def open_get_routes() -> set[str]:
    """Paths of the app's GET routes that need no key (what a probe can call)."""
    settings = Settings.from_env({"ATP_API_KEYS": "k:*", "ATP_REDIS_URL": "redis://127.0.0.1:1/0"})
    app = create_app(settings)
    paths = {
        r.resource.canonical
        for r in app.router.routes()
        if r.method == "GET" and r.resource is not None and "{" not in r.resource.canonical
    }
    return paths & {"/healthz", "/readyz", "/metrics", "/openapi.json"}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def deployment() -> dict[str, Any]:
    return k8s_objects()[f"Deployment/{NAME}"]


def container() -> dict[str, Any]:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def k8s_env() -> dict[str, str]:
    objects = k8s_objects()
    env: dict[str, str] = {}
    for source in container()["envFrom"]:
        if "configMapRef" in source:
            env.update(objects[f"ConfigMap/{source['configMapRef']['name']}"]["data"])
        else:
            env.update(objects[f"Secret/{source['secretRef']['name']}"]["stringData"])
    return env


def test_config_names_found() -> None:
    names = config_names()
    assert {"ATP_REDIS_URL", "ATP_API_KEYS", "ATP_HTTP_PORT", "ATP_TLS_CERT"} <= names


def test_probes_point_at_real_open_routes() -> None:
    routes = open_get_routes()
    assert routes == {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    spec = container()
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert spec[probe]["httpGet"]["path"] in routes, probe
        assert spec[probe]["httpGet"]["port"] in ("http", 8080)
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes


def test_k8s_env_is_what_config_reads_and_parses() -> None:
    env = k8s_env()
    unknown = {name for name in env if name not in config_names()}
    assert not unknown, f"not read by config.py: {unknown}"
    settings = Settings.from_env(env)  # every value parses
    assert settings.redis_url is not None, "replicas need a shared external Redis"
    assert settings.redis_url.startswith(("redis://", "rediss://"))
    assert all(key.digest for key in parse_api_keys(env["ATP_API_KEYS"]))
    # the Secret stores digests only
    for entry in env["ATP_API_KEYS"].split(";"):
        assert entry.strip().startswith("sha256="), entry


def test_k8s_ports_line_up() -> None:
    spec = container()
    (port,) = spec["ports"]
    assert port["name"] == "http" and port["containerPort"] == 8080
    assert int(k8s_env()["ATP_HTTP_PORT"]) == port["containerPort"]
    assert k8s_env()["ATP_HTTP_HOST"] == "0.0.0.0"
    service = k8s_objects()[f"Service/{NAME}"]
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] in (port["name"], port["containerPort"])
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    assert dockerfile_exposed() == {port["containerPort"]}


def test_deployment_replicas_resources_and_security() -> None:
    dep = deployment()
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_user()
    assert pod["automountServiceAccountToken"] is False
    spec = container()
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= spec["resources"][kind].keys(), kind
    # a read-only root needs somewhere to write: /tmp and the working directory
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert {"/tmp", "/data"} <= mounts


def test_pdb_and_service_select_the_pods() -> None:
    objects = k8s_objects()
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    pdb = objects[f"PodDisruptionBudget/{NAME}"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < deployment()["spec"]["replicas"]
    assert objects[f"Service/{NAME}"]["spec"]["selector"].items() <= labels.items()
    policy = objects[f"NetworkPolicy/{NAME}"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_compose_replicas_env_and_image() -> None:
    services = compose()["services"]
    atp, erp, redis = services["atp"], services["erp"], services["redis"]
    assert atp["deploy"]["replicas"] == 3
    env = atp["environment"]
    unknown = {name for name in env if name not in config_names()}
    assert not unknown, f"not read by config.py: {unknown}"
    assert env["ATP_REDIS_URL"].startswith("redis://redis:")
    assert env["ATP_ERP_URL"] == "http://erp:8090"
    # compose's ${VAR:-default}: the defaults must parse too
    resolved = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
    Settings.from_env(resolved)
    (mapping,) = atp["ports"]
    assert mapping.endswith(f":{env['ATP_HTTP_PORT']}")
    # one image, the same as Kubernetes runs
    assert atp["image"] == erp["image"] == container()["image"]
    assert atp["read_only"] is True and "/tmp" in atp["tmpfs"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "kafka" in services and services["kafka"]["profiles"] == ["kafka"]
    routes = open_get_routes()
    for name in ("atp", "erp"):
        (url,) = re.findall(r"http://127\.0\.0\.1:\d+(/[a-z]+)", " ".join(
            services[name]["healthcheck"]["test"]))  # fmt: skip
        assert url in routes or name == "erp", url


def test_compose_erp_sim_arguments_parse() -> None:
    erp = compose()["services"]["erp"]
    assert erp["command"][0] == "erp-sim"
    parser = argparse.ArgumentParser()
    erpsim_config.add_arguments(parser)
    args = parser.parse_args(erp["command"][1:])
    assert int(args.port) == 8090
    assert args.publish_url == "http://atp:8080"


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not
            line.strip().startswith("#")]  # fmt: skip


def final_stage() -> list[str]:
    lines = dockerfile_lines()
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def dockerfile_user() -> int:
    (user,) = [line.split()[1] for line in final_stage() if line.upper().startswith("USER ")]
    return int(user.split(":")[0])


def dockerfile_exposed() -> set[int]:
    return {
        int(port.split("/")[0])
        for line in final_stage() if line.upper().startswith("EXPOSE ")
        for port in line.split()[1:]
    }  # fmt: skip


def test_dockerfile_is_multi_stage_and_runtime_is_lean() -> None:
    lines = dockerfile_lines()
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(froms) >= 2
    assert " AS build" in froms[0]
    runtime = final_stage()
    assert any(line.startswith("COPY --from=build") for line in runtime)
    # the runtime gets the built environment, not the source or the wheels
    assert not any(re.match(r"COPY (?!--from)", line) for line in runtime)
    assert not any(line.upper().startswith("ADD ") for line in lines)
    env = " ".join(line for line in runtime if line.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "ATP_DATA_DIR=/data" in env
    assert "ATP_HTTP_PORT=8080" in env


def test_dockerfile_user_is_non_root() -> None:
    assert dockerfile_user() >= 1000
    user_line = next(line for line in final_stage() if line.startswith("USER "))
    assert re.fullmatch(r"USER \d+:\d+", user_line), "numeric, for runAsNonRoot"


def test_dockerfile_healthcheck_calls_a_real_route() -> None:
    (check,) = [line for line in final_stage() if line.startswith("HEALTHCHECK ")]
    paths = re.findall(r"127\.0\.0\.1:%s(/[a-z]+)", check)
    assert paths == ["/healthz"]
    assert set(paths) <= open_get_routes()


def test_redis_server_only_for_the_embedded_default() -> None:
    runtime = " ".join(final_stage())
    assert "ARG EMBEDDED_REDIS=1" in runtime
    assert re.search(r'if \[ "\$EMBEDDED_REDIS" = 1 \]; then .*redis-server', runtime)


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!atp_service/"} <= set(rules)
    assert not any(r.startswith("!") and (".venv" in r or ".atp-data" in r) for r in rules)
