"""The NATS servers' configuration is one nats-server accepts, and the collector's configuration is wired to
the ports the services, Services and pods use."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from .manifests import OVERLAYS, find, one, render, rok_containers


def _config_map(objects, prefix: str) -> dict:
    (found,) = [c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith(prefix)]
    return found


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_nats_server_accepts_the_configuration_of_every_overlay(overlay: str, tmp_path):
    server = shutil.which("nats-server")
    assert server, "nats-server is not installed (make setup installs it): it checks the NATS configuration"
    objects = render(OVERLAYS[overlay])
    for name, text in _config_map(objects, "rok-nats-config")["data"].items():  # nats.conf includes auth.conf
        (tmp_path / name).write_text(text)
    conf = tmp_path / "nats.conf"
    nats = one(objects, "StatefulSet", "rok-nats")
    (server_container,) = [c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
    secrets = {e["name"]: "from-a-secret" for e in server_container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    result = subprocess.run(
        [server, "-t", "-c", str(conf)],
        env={"POD_NAME": "rok-nats-0", **secrets},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    # The StatefulSet mounts it where the server is told to read it, and gives it POD_NAME.
    nats = one(objects, "StatefulSet", "rok-nats")
    (container,) = [c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
    assert "/etc/nats/nats.conf" in container["args"]
    assert {"name": "config", "mountPath": "/etc/nats"} in container["volumeMounts"]
    assert any(e["name"] == "POD_NAME" for e in container["env"])


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_collector_takes_otlp_where_the_services_send_it_and_serves_prometheus(overlay: str):
    objects = render(OVERLAYS[overlay])
    config = yaml.safe_load(_config_map(objects, "rok-otel-collector-config")["data"]["collector.yaml"])
    service = config["service"]
    for pipeline in service["pipelines"].values():
        for part in ("receivers", "processors", "exporters"):
            for name in pipeline[part]:
                assert name in config[part], f"pipeline uses {part[:-1]} {name}, which is not defined"
    assert "otlp" in service["pipelines"]["traces"]["receivers"]
    assert "prometheus" in service["pipelines"]["metrics"]["exporters"]

    collector_service = one(objects, "Service", "rok-otel-collector")
    ports = {p["name"]: p["port"] for p in collector_service["spec"]["ports"]}
    http_port = int(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rpartition(":")[2])
    for _, container in rok_containers(objects):
        (endpoint,) = [e["value"] for e in container["env"] if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"]
        url = urlsplit(endpoint)
        assert url.hostname == collector_service["metadata"]["name"], container["name"]
        assert url.port == ports["otlp-http"] == http_port, container["name"]
    metrics_port = int(config["exporters"]["prometheus"]["endpoint"].rpartition(":")[2])
    assert ports["metrics"] == metrics_port
    deployment = one(objects, "Deployment", "rok-otel-collector")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_collector_scrapes_the_nats_exporter_of_every_server(overlay: str):
    objects = render(OVERLAYS[overlay])
    config = yaml.safe_load(_config_map(objects, "rok-otel-collector-config")["data"]["collector.yaml"])
    (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    headless = one(objects, "Service", discovery["names"][0])
    assert headless["spec"]["clusterIP"] == "None", "DNS discovery needs one address per server"
    assert discovery["port"] in {p["port"] for p in headless["spec"]["ports"]}
    nats = one(objects, "StatefulSet", "rok-nats")
    (exporter,) = [c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "exporter"]
    assert discovery["port"] in {p["containerPort"] for p in exporter["ports"]}
    assert "-jsz=all" in exporter["args"]
