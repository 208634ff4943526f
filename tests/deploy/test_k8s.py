"""docker/k8s: valid objects, processor ranges that cover the hub, settings that exist."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from durafka.deploy import coverage_problems, ordinal_of, pod_range
from durafka.errors import ConfigurationError
from durafka.settings import Settings
from durafka.topology import HubTopics, load_hub_spec
from examples import hello
from tests.deploy.manifests import (
    K8S,
    dockerfile_env,
    dockerfile_user,
    find,
    k8s_documents,
    known_variables,
    option,
    parse_cli,
    resized,
)

#: The oldest Kubernetes the manifests are for (PodDisruptionBudget policy/v1 and
#: batch/v1 Jobs with ttlSecondsAfterFinished are older) and the newest schemas known.
K8S_VERSIONS = ("1.28.0", f"{kubernetes_validate.utils.latest_version()}.0")

#: KEDA's objects are custom resources, absent from Kubernetes' schemas: the fields
#: these manifests use, from KEDA 2.x's CRDs (keda.sh/v1alpha1), unknown ones refused.
_NAME = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": _NAME,
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer"},
            "cooldownPeriod": {"type": "integer"},
            "triggers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["kafka"]},
                        "metadata": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "required": ["bootstrapServers", "consumerGroup", "topic"],
                        },
                        "authenticationRef": _NAME,
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["secretTargetRef"],
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {k: {"type": "string"} for k in ("parameter", "name", "key")},
                },
            }
        },
    },
}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return k8s_documents()


@pytest.fixture(scope="module")
def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The roles' environment: the ConfigMap and the Kafka Secret."""
    data: dict[str, str] = dict(find(docs, "ConfigMap", "durafka-config")["data"])
    data.update(find(docs, "Secret", "durafka-kafka")["stringData"])
    return data


def test_every_manifest_is_listed_and_every_object_is_valid(docs: list[dict[str, Any]]) -> None:
    listed = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert {p.name for p in K8S.iterdir()} - {"kustomization.yaml"} == listed
    import yaml

    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(resources) == sorted(listed), "kustomization.yaml misses a manifest"
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["apiVersion"].startswith("keda.sh/"):
            assert doc["apiVersion"] == "keda.sh/v1alpha1"
            jsonschema.validate(doc["spec"], KEDA_SCHEMAS[doc["kind"]])
            continue
        for version in K8S_VERSIONS:
            # strict: an unknown field (a typo) is an error, not silently ignored.
            kubernetes_validate.validate(doc, version, strict=True)
    assert {
        "StatefulSet",
        "PodDisruptionBudget",
        "Deployment",
        "ScaledObject",
        "Job",
        "ConfigMap",
        "Secret",
    } <= kinds


def test_a_typo_in_a_manifest_is_caught(docs: list[dict[str, Any]]) -> None:
    import copy

    broken = copy.deepcopy(find(docs, "StatefulSet", "durafka-processor"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "durafka-worker"))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled["spec"], KEDA_SCHEMAS["ScaledObject"])
    with pytest.raises(Exception, match="No such option: --pod"):
        parse_cli(["processor", "examples.hello:app", "--pod", "3"])


@pytest.mark.parametrize("pods", [1, 2, 3, 4, 5, 7, 12])
def test_processor_pods_cover_every_partition_once(
    docs: list[dict[str, Any]], config: dict[str, str], pods: int
) -> None:
    statefulset = resized(find(docs, "StatefulSet", "durafka-processor"), pods)
    partitions = int(config["DURAFKA_PARTITIONS"])
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--ordinal-from-hostname" in args
    count = int(option(args, "--pods"))
    assert count == statefulset["spec"]["replicas"] == pods
    # The pods' hostnames are <statefulset>-<ordinal>; each takes its range as
    # `durafka processor --pods N --ordinal-from-hostname` does.
    name = statefulset["metadata"]["name"]
    ranges = [pod_range(partitions, count, ordinal_of(f"{name}-{i}")) for i in range(pods)]
    assert coverage_problems(ranges, partitions) == []


def test_the_shipped_replicas_match_pods_and_more_pods_than_partitions_fail(
    docs: list[dict[str, Any]], config: dict[str, str]
) -> None:
    statefulset = find(docs, "StatefulSet", "durafka-processor")
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert int(option(args, "--pods")) == statefulset["spec"]["replicas"]
    partitions = int(config["DURAFKA_PARTITIONS"])
    with pytest.raises(ConfigurationError, match="at most"):
        pod_range(partitions, partitions + 1, 0)
    # Replicas raised without --pods: the extra pod refuses to start, naming the fix.
    with pytest.raises(ConfigurationError, match="change --pods together"):
        pod_range(partitions, 2, ordinal_of(f"{statefulset['metadata']['name']}-2"))


def test_every_setting_the_manifests_use_exists_and_parses(
    docs: list[dict[str, Any]], config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = known_variables()
    used = set(config)
    for doc in docs:
        if doc["kind"] == "Secret":
            used |= {k for k in doc.get("stringData", {}) if k.startswith("DURAFKA_")}
        for container in _containers(doc):
            used |= {e["name"] for e in container.get("env", [])}
    unknown = sorted(v for v in used if v.startswith("DURAFKA_") and v not in known)
    assert not unknown, f"not durafka settings: {unknown}"
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # the values parse, as the pods will read them
    assert settings.partitions == int(config["DURAFKA_PARTITIONS"])
    assert str(settings.state_dir) == dockerfile_env()["DURAFKA_STATE_DIR"]


def test_every_container_runs_a_command_the_cli_accepts(
    docs: list[dict[str, Any]], config: dict[str, str]
) -> None:
    checked = 0
    for doc in docs:
        for container in _containers(doc):
            # Kubernetes expands $(VAR) from the container's environment.
            parse_cli([_expand(a, config) for a in container["args"]])
            checked += 1
    assert checked >= 4


def test_probes_security_and_the_disruption_budget(
    docs: list[dict[str, Any]], config: dict[str, str]
) -> None:
    port = int(config["DURAFKA_METRICS_PORT"])
    for kind, name in (("StatefulSet", "durafka-processor"), ("Deployment", "durafka-worker")):
        workload = find(docs, kind, name)
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert pod["terminationGracePeriodSeconds"] <= 30
        budget = find(docs, "PodDisruptionBudget", name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    statefulset = find(docs, "StatefulSet", "durafka-processor")
    claims = [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]]
    mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert [(m["name"], m["mountPath"]) for m in mounts] == [(claims[0], "/var/lib/durafka")]
    uid = dockerfile_user()
    for doc in docs:
        for pod in _pods(doc):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == uid


def test_the_autoscaler_watches_the_workers_group_on_the_activities_topic(
    docs: list[dict[str, Any]], config: dict[str, str]
) -> None:
    scaled = find(docs, "ScaledObject", "durafka-worker")["spec"]
    assert (
        scaled["scaleTargetRef"]["name"]
        == find(docs, "Deployment", "durafka-worker")["metadata"]["name"]
    )
    trigger = scaled["triggers"][0]["metadata"]
    topics = HubTopics(hello.app.settings.task_hub)
    assert trigger["topic"] == topics.activities
    assert trigger["consumerGroup"] == topics.worker_group
    assert trigger["bootstrapServers"] == config["DURAFKA_BOOTSTRAP_SERVERS"]
    specs = load_hub_spec(topics.hub, partitions=int(config["DURAFKA_PARTITIONS"]))
    activities = next(s for s in specs if s.name == topics.activities)
    # More workers than partitions of the topic would idle.
    assert scaled["maxReplicaCount"] <= activities.partitions
    auth = find(docs, "TriggerAuthentication", scaled["triggers"][0]["authenticationRef"]["name"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in find(docs, "Secret", ref["name"])["stringData"]
    job = find(docs, "Job", "durafka-topology")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert option(args, "--hub") == topics.hub


def _pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return [template["spec"]] if template else []


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for pod in _pods(doc) for c in pod["containers"]]


def _expand(arg: str, env: dict[str, str]) -> str:
    for key, value in env.items():
        arg = arg.replace(f"$({key})", value)
    return arg
