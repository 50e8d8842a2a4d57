"""deploy/k8s (docs/scale.md): no cluster here, so the manifests are parsed and cross-checked.

Every file is YAML with apiVersion/kind/name in namespace edgevib; the ConfigMap's cloud.toml
is a valid cloud configuration with a share group; bridges are StatefulSets whose client id is
the pod name and whose broker is a shard that exists; every volume claim, Secret and
ConfigMap a pod refers to is defined; the FlinkDeployment runs this job's module through the
PythonDriver with savepoint upgrades; the brokers' size limits equal the shipped Mosquitto
configuration's.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, _missing

K8S = REPO / "deploy" / "k8s"


def _docs() -> list[tuple[str, dict[str, Any]]]:
    try:
        import yaml
    except ModuleNotFoundError:
        _missing("PyYAML is not installed")
        raise
    out = []
    for p in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(p.read_text()):
            if doc is not None:
                out.append((p.name, doc))
    return out


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _docs() if d["kind"] == kind}


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, d in _docs():
        if d["kind"] in ("StatefulSet", "Deployment"):
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "FlinkDeployment":
            out.append((d["metadata"]["name"], d["spec"]["podTemplate"]["spec"]))
    return out


def test_every_manifest_parses_and_names_itself() -> None:
    docs = _docs()
    assert {f for f, _ in docs} == {p.name for p in K8S.glob("*.yaml")}
    kinds = {d["kind"] for _, d in docs}
    assert {"Namespace", "PersistentVolumeClaim", "ConfigMap", "Secret", "StatefulSet", "Service",
            "FlinkDeployment"} <= kinds
    for f, d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), f
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "edgevib", f"{f}: {d['metadata']['name']}"


def test_cloud_toml_in_the_configmap_is_a_valid_config_with_a_share_group() -> None:
    from edgevib.cloud.config import load_config

    toml = _by_kind("ConfigMap")["edgevib-cloud"]["data"]["cloud.toml"]
    tmp = Path(__file__).parent / ".k8s-cloud.toml"
    try:
        tmp.write_text(toml)
        cfg = load_config(tmp, env={})
    finally:
        tmp.unlink(missing_ok=True)
    assert cfg.bridge.share_group and str(cfg.spool_dir).startswith("/data/")
    assert str(cfg.checkpoint_dir).startswith("/data/")


def test_bridges_are_statefulsets_with_stable_client_ids_on_existing_shards() -> None:
    sets = _by_kind("StatefulSet")
    brokers = sets["mosquitto"]["spec"]["replicas"]
    bridges = {n: s for n, s in sets.items() if s["spec"]["template"]["metadata"]["labels"].get("app") == "edgevib-bridge"}
    assert len(bridges) == brokers, "one bridge group per broker shard"
    shards = set()
    for name, s in bridges.items():
        assert s["spec"]["replicas"] >= 2, f"{name}: a shared group needs >= 2 bridges"
        c = s["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        assert env["EDGEVIB_BRIDGE__CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        m = re.fullmatch(r"mqtt://mosquitto-(\d+)\.mosquitto\.edgevib\.svc:1883", env["EDGEVIB_BROKER_URL"]["value"])
        assert m and int(m.group(1)) < brokers, f"{name}: broker {env['EDGEVIB_BROKER_URL']['value']}"
        shards.add(int(m.group(1)))
        assert c["args"][0] == "bridge"
    assert shards == set(range(brokers))
    # every shard has its external endpoint
    services = _by_kind("Service")
    for k in range(brokers):
        sel = services[f"mqtt-{k}"]["spec"]["selector"]
        assert sel["statefulset.kubernetes.io/pod-name"] == f"mosquitto-{k}"


def test_everything_a_pod_refers_to_is_defined() -> None:
    claims = set(_by_kind("PersistentVolumeClaim"))
    maps, secrets = _by_kind("ConfigMap"), _by_kind("Secret")
    for name, spec in _pod_specs():
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{name}: {v}"
            if "configMap" in v:
                assert v["configMap"]["name"] in maps, f"{name}: {v}"
        for c in spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])} | {"data", "pgdata"}, name
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: {ref}"


def test_flink_deployment_runs_this_job_through_the_python_driver() -> None:
    (fd,) = _by_kind("FlinkDeployment").values()
    job = fd["spec"]["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["args"][:2] == ["-pym", "edgevib.cloud.flink.job"]
    import importlib.util

    assert importlib.util.find_spec("edgevib.cloud.flink.job") is not None
    assert job["upgradeMode"] == "savepoint" and job["parallelism"] >= 2
    conf = fd["spec"]["flinkConfiguration"]
    assert conf["state.checkpoints.dir"].startswith("file:///data/")
    dockerfile = (REPO / "deploy" / "Dockerfile.flink").read_text()
    assert "flink-python.jar" in job["jarURI"] and "flink-python.jar" in dockerfile
    m = re.search(r"ARG FLINK_VERSION=(\d+)\.(\d+)", dockerfile)
    assert m and fd["spec"]["flinkVersion"].startswith("v"), "the image's Flink version is pinned"
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for src in shlex.split(line)[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile.flink: COPY source {src} missing"


@pytest.mark.parametrize("key", ["message_size_limit", "max_packet_size"])
def test_broker_size_limits_match_the_shipped_mosquitto_conf(key: str) -> None:
    def opt(text: str) -> str:
        (v,) = [ln.split()[1] for ln in text.splitlines() if ln.strip().startswith(key + " ")]
        return v

    shipped = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    k8s = _by_kind("ConfigMap")["mosquitto-conf"]["data"]["mosquitto.conf"]
    assert opt(k8s) == opt(shipped)
