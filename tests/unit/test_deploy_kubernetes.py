"""deploy/kubernetes/: the manifests parse, and what they give rst is a configuration rst takes.

No cluster here: each manifest is parsed as YAML, and rst's configuration is loaded the way a
pod would load it — the ConfigMap's ``rst.toml`` overlaid by the container's environment, with
``secretKeyRef`` values taken from ``secret.example.yaml`` and ``fieldRef`` from each pod of the
StatefulSet. An environment variable that names no key, a port or a probe that points nowhere,
a Secret key that does not exist, fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from rst.auth.exposure import exposure_problem, exposure_warnings
from rst.config import AeConfig, Config, S3AeConfig, load_config
from tests.support.deploy import ROOT, image_environment, yaml_documents

KUBERNETES = ROOT / "deploy" / "kubernetes"
NAMESPACE = "rst"
OLDEST_KUBERNETES = "1.28.0"
"""The oldest Kubernetes the manifests are checked against (docs/how-to/scale-out.md says it)."""


def documents(name: str) -> list[dict[str, Any]]:
    return yaml_documents(KUBERNETES / name)


def resources() -> list[dict[str, Any]]:
    """Every object ``kubectl apply -k deploy/kubernetes`` creates."""
    kustomization = documents("kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in documents(name)]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def statefulset() -> dict[str, Any]:
    return one("StatefulSet", "rst")


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (found,) = [c for c in containers if c["name"] == name]
    return found


def secret() -> dict[str, str]:
    (doc,) = documents("secret.example.yaml")
    assert doc["kind"] == "Secret"
    assert doc["metadata"]["name"] == "rst-secrets"
    data: dict[str, str] = doc["stringData"]
    return data


def pod_environment(pod: str) -> dict[str, str]:
    """The rst container's environment in pod *pod* (e.g. ``rst-0``): the image's, then the
    manifest's."""
    environ = image_environment()
    for var in container(statefulset(), "rst")["env"]:
        if "value" in var:
            environ[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", var
            environ[var["name"]] = pod
        else:
            ref = source["secretKeyRef"]
            assert ref["name"] == "rst-secrets", var
            environ[var["name"]] = secret()[ref["key"]]
    return environ


def mount_of(volume: str) -> str:
    (mount,) = [m for m in container(statefulset(), "rst")["volumeMounts"] if m["name"] == volume]
    path: str = mount["mountPath"]
    return path


def pod_config(tmp_path: Path, ordinal: int) -> Config:
    """rst's configuration in pod rst-*ordinal*, loaded as ``rst serve`` loads it."""
    args = container(statefulset(), "rst")["args"]
    assert args[:2] == ["serve", "--config"]
    path = Path(args[2])
    config_map = one("ConfigMap", "rst-config")
    volumes = statefulset()["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v.get("configMap", {}).get("name") == "rst-config"]
    assert mount_of(volume["name"]) == str(path.parent)
    file = tmp_path / path.name
    file.write_text(config_map["data"][path.name], encoding="utf-8")
    return load_config(file, environ=pod_environment(f"rst-{ordinal}"))


def ports(spec: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in spec["ports"]}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    # strict: a field the API does not have (a typo) is an error, not ignored as kubectl would
    objects = [*resources(), *documents("secret.example.yaml")]
    for doc in objects:
        kubernetes_validate.validate(doc, version, strict=True)
    assert {doc["kind"] for doc in objects} >= {
        "StatefulSet",
        "Service",
        "ConfigMap",
        "Secret",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }


def test_the_kustomization_names_every_manifest_but_the_example_secret() -> None:
    listed = set(documents("kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")}
    assert listed == on_disk - {"kustomization.yaml", "secret.example.yaml"}
    assert documents("kustomization.yaml")[0]["namespace"] == NAMESPACE
    assert one("Namespace", NAMESPACE)


@pytest.mark.parametrize("ordinal", [0, 1])
def test_every_pod_gets_a_valid_configuration_with_its_own_ae_title_and_the_secrets(
    tmp_path: Path, ordinal: int
) -> None:
    config = pod_config(tmp_path, ordinal)

    assert config.dimse.aet == f"rst-{ordinal}"
    assert (config.http.host, config.dimse.host) == ("0.0.0.0", "0.0.0.0")  # the image's
    assert exposure_problem(config) is None
    assert exposure_warnings(config) == []
    s3 = [ae for ae in config.aets if isinstance(ae, S3AeConfig)]
    assert [ae.index for ae in s3] == [secret()["index-dsn"]]
    assert str(s3[0].index).startswith("postgresql://")
    environ = pod_environment(f"rst-{ordinal}")
    assert {s3[0].access_key_env, s3[0].secret_key_env} <= set(environ)
    assert config.auth is not None
    assert [t.name for t in config.auth.tokens] == ["ai-pipeline"]
    # nothing per pod or secret in the ConfigMap itself
    text = one("ConfigMap", "rst-config")["data"]["rst.toml"]
    assert "index =" not in text
    assert "[[auth.tokens]]" not in re.sub(r"#.*", "", text)
    assert "aet =" not in tomllib.loads(text)["dimse"]


def test_the_configuration_holds_no_secret() -> None:
    text = one("ConfigMap", "rst-config")["data"]["rst.toml"]
    for value in secret().values():
        assert value not in text


def test_ports_and_probes_are_the_configured_ones(tmp_path: Path) -> None:
    config = pod_config(tmp_path, 0)
    rst = container(statefulset(), "rst")

    assert ports(rst) == {"http": config.http.port, "dicom": config.dimse.port}
    assert rst["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert rst["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert rst["startupProbe"]["httpGet"]["path"] == "/livez"
    # the kubelet's probes carry no credentials
    assert config.auth is not None
    assert {"livez", "readyz"} <= set(config.auth.open_endpoints)
    # requests in flight end before the kubelet's SIGKILL
    grace = statefulset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert config.http.graceful_timeout < grace


def test_rst_runs_unprivileged_on_a_read_only_root_with_its_writes_on_volumes(
    tmp_path: Path,
) -> None:
    pod = statefulset()["spec"]["template"]["spec"]
    rst = container(statefulset(), "rst")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert rst["securityContext"]["readOnlyRootFilesystem"] is True
    assert rst["securityContext"]["allowPrivilegeEscalation"] is False
    assert rst["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(rst["resources"]["requests"])
    assert "memory" in rst["resources"]["limits"]
    # the image's user is the one the pod runs as (Containerfile: useradd --uid)
    containerfile = (ROOT / "Containerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']} " in containerfile

    config = pod_config(tmp_path, 0)
    assert config.cache.path == mount_of("cache")
    assert config.dimse.spool_dir == mount_of("spool")
    assert mount_of("tmp") == "/tmp"  # Python's temporary files
    assert config.http.workers == 1  # per replica: scale with replicas


def test_each_replica_is_reachable_by_the_pacs_under_its_own_name() -> None:
    sts = statefulset()
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    dicom = ports(container(sts, "rst"))["dicom"]
    for ordinal in range(sts["spec"]["replicas"]):
        service = one("Service", f"rst-{ordinal}-dicom")
        assert service["spec"]["selector"] == {
            "statefulset.kubernetes.io/pod-name": f"rst-{ordinal}"
        }
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            (dicom, "dicom")
        ]
    per_pod = [
        d for d in resources() if d["kind"] == "Service" and "-dicom" in d["metadata"]["name"]
    ]
    assert len(per_pod) == sts["spec"]["replicas"]


def test_services_select_the_pods_and_name_their_ports() -> None:
    labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    for name in ("rst-http", "rst-pods"):
        service = one("Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports(container(statefulset(), "rst"))


def test_only_nginx_and_the_pacs_may_connect_to_rst(tmp_path: Path) -> None:
    policy = one("NetworkPolicy", "rst")
    labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(rules) == set(ports(container(statefulset(), "rst")))
    nginx_labels = one("Deployment", "rst-nginx")["spec"]["template"]["metadata"]["labels"]
    assert [peer["podSelector"]["matchLabels"] for peer in rules["http"]] == [nginx_labels]
    # the PACS: the addresses its C-STOREs may come from, in rst's configuration too
    (pacs,) = [ae for ae in pod_config(tmp_path, 0).aets if isinstance(ae, AeConfig)]
    assert [peer["ipBlock"]["cidr"] for peer in rules["dicom"]] == [
        f"{address}/32" if "/" not in address else address for address in pacs.store_from
    ]


# -- nginx -----------------------------------------------------------------------------------


def nginx_conf() -> str:
    text: str = one("ConfigMap", "rst-nginx")["data"]["nginx.conf"]
    return text


def study_of(uri: str, args: dict[str, str] | None = None) -> str:
    """What the two ``map`` blocks of nginx.conf make of a request: ``$study_uid``."""
    conf = nginx_conf()
    (pattern,) = re.findall(r'map \$uri \$study_from_path \{\s*"~([^"]+)" \$uid;', conf)
    match = re.search(pattern.replace("(?<", "(?P<"), uri)
    from_path = match.group("uid") if match else ""
    return from_path or (args or {}).get("studyUID", "")


def test_nginx_hashes_on_the_study_uid_consistently() -> None:
    conf = nginx_conf()
    upstream = re.search(r"upstream rst \{(.*?)\}", conf, re.S)
    assert upstream is not None
    assert "hash $study_uid consistent;" in upstream.group(1)
    assert "proxy_pass http://rst;" in conf
    assert re.search(r"proxy_buffering off;", conf)  # WADO-RS streams
    assert re.search(r"client_max_body_size 0;", conf)  # rst bounds STOW-RS itself

    study = "1.2.840.113619.2.55.3"
    paths = [
        f"/aets/PACS/studies/{study}",
        f"/aets/PACS/studies/{study}/metadata",
        f"/aets/PACS/studies/{study}/series/1.2.3/instances/1.2.3.4/frames/1,2",
        f"/aets/ARCHIVE/studies/{study}/series/1.2.3/thumbnail",
    ]
    assert {study_of(path) for path in paths} == {study}
    assert study_of("/aets/PACS/wado", {"studyUID": study}) == study
    assert study_of("/aets/PACS/studies") == ""  # QIDO-RS, STOW-RS without UID: round robin
    assert study_of("/aets/PACS/studiesX/1.2") == ""


def test_nginx_has_one_upstream_server_per_replica_by_its_stable_name() -> None:
    sts = statefulset()
    http = ports(container(sts, "rst"))["http"]
    upstream = re.search(r"upstream rst \{(.*?)\}", nginx_conf(), re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server (\S+)", upstream.group(1), re.M)
    service = sts["spec"]["serviceName"]
    assert servers == [
        f"rst-{n}.{service}.{NAMESPACE}.svc.cluster.local:{http}"
        for n in range(sts["spec"]["replicas"])
    ]


def test_nginx_keeps_probes_and_metrics_inside_the_cluster() -> None:
    conf = nginx_conf()
    for path in ("/livez", "/readyz", "/metrics"):
        assert f"location = {path} {{ return 404; }}" in conf
    nginx = one("Deployment", "rst-nginx")
    assert container(nginx, "nginx")["securityContext"]["readOnlyRootFilesystem"] is True
    assert nginx["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    front = one("Service", "rst")
    assert front["spec"]["selector"] == nginx["spec"]["selector"]["matchLabels"]
