"""deploy/: the Kubernetes objects validate against Kubernetes' schemas (offline, kubernetes-validate), the
KServe ones have what KServe needs, and every tilecast flag and environment variable they use exists and
takes the value given (parsed by the real `serve` and `convert` commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from tilecast.cli import app
from tilecast.server.cli import settings_of
from tilecast.server.metrics import Metrics
from tilecast.server.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES = "1.37.0"
KSERVE = "serving.kserve.io"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def the(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


CORE = [doc for doc in documents() if not doc["apiVersion"].startswith(KSERVE)]


@pytest.mark.parametrize("doc", CORE, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in CORE])
def test_kubernetes_objects_validate_against_the_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # strict: an unknown field is an error


def test_every_object_is_checked_somewhere() -> None:
    kinds = {d["kind"] for d in documents()}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Job",
                     "PersistentVolumeClaim", "ServingRuntime", "InferenceService"}


def command(name: str) -> Any:
    """The real command-line command (typer's click command, parameters and environment variables)."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group.commands[name]


def tilecast_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if e["name"].startswith("TILECAST_")}


def parsed(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """The tilecast command a container runs and its parameters, as the real command parses its flags and
    TILECAST_ variables (an unknown flag or a bad value fails here)."""
    words = [*container.get("command", []), *container.get("args", [])]
    assert words[0] == "tilecast", words
    name, args = words[1], words[2:]
    cmd = command(name)
    known = {env for p in cmd.params for env in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}
    env = tilecast_env(container)
    assert set(env) <= known, f"{name} has no variable {set(env) - known}"
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with cmd.make_context(name, list(args)) as ctx:
        return name, ctx.params


def test_the_deployment_serves_its_volume_on_its_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    name, params = parsed(container, monkeypatch)
    settings = settings_of(params)
    assert name == "serve" and settings.host == "0.0.0.0"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(settings.repository)]["readOnly"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == settings.port  # grpc.health.v1, overall status
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] > settings.grace_period_s
    assert settings.threads_per_instance(settings.instances) <= int(container["resources"]["limits"]["cpu"])


def test_the_headless_service_selects_the_servers() -> None:
    service, deployment = the("Service"), the("Deployment")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= named


def test_the_autoscaler_scales_on_a_metric_the_servers_export_through_the_adapter_rule() -> None:
    hpa, adapter = the("HorizontalPodAutoscaler"), the("ConfigMap")
    assert hpa["spec"]["scaleTargetRef"]["name"] == the("Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    exported = {family.name for family in Metrics().registry.collect()}
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert name in exported and any(name in rule["seriesQuery"] and rule["name"]["as"] == name for rule in rules)


def test_the_indexed_job_shards_one_archive_over_the_headless_service(monkeypatch: pytest.MonkeyPatch) -> None:
    job = the("Job")
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    name, params = parsed(container, monkeypatch)
    assert name == "convert" and spec["completionMode"] == "Indexed"
    assert params["shard"] == "auto" and params["shard_count"] == spec["completions"] >= spec["parallelism"]
    service, port = the("Service")["metadata"]["name"], the("Service")["spec"]["ports"][0]["port"]
    assert params["server"] == [f"dns:///{service}:{port}"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert all(any(Path(p).is_relative_to(m) for m in mounts) for p in (*params["inputs"], params["output"]))


def test_the_kserve_runtime_runs_tilecast_serve_on_the_model_kserve_mounts(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = the("ServingRuntime")
    assert runtime["apiVersion"] == f"{KSERVE}/v1alpha1"
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["grpc-v2"] and spec["supportedModelFormats"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    name, params = parsed(container, monkeypatch)
    settings = settings_of(params)
    assert name == "serve" and settings.kserve and settings.repository == Path("/mnt/models")
    assert settings.host == "0.0.0.0" and [p["containerPort"] for p in container["ports"]] == [settings.port]
    assert isinstance(settings, Settings)


def test_the_inference_service_uses_the_runtime_and_its_format() -> None:
    service, runtime = the("InferenceService"), the("ServingRuntime")
    assert service["apiVersion"] == f"{KSERVE}/v1beta1"
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "grpc-v2"
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats and model["storageUri"]
