"""Deployment configuration (infra/, constraints.txt) parses, passes Ray's and KubeRay's rules,
and names one Ray version everywhere. Offline and fast: files are read, nothing is built,
started or contacted."""

from __future__ import annotations

import copy
import re
import shlex
import socket
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

import genimg

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CONSTRAINTS = ROOT / "constraints.txt"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
LAUNCHER = INFRA / "ray" / "ray-cluster.gpu.yaml"
KUBERAY_CLUSTER = INFRA / "kuberay" / "ray-cluster.yaml"
KUBERAY_JOB = INFRA / "kuberay" / "ray-job.retrain.yaml"

# Whatever YAML exists under infra/ when the tests run, including files added later.
YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml"})
# Every text file under infra/ (comments included: a stale tag in a documented command is wrong too).
TEXT_FILES = sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix not in {".png", ".gif"})

HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
VERSION = r"\d+\.\d+\.\d+"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{rel(path)}: top level is {type(document).__name__}, not a mapping"
    return document


def pinned_ray_version() -> str:
    pins = [
        line.split("==", 1)[1].strip()
        for line in CONSTRAINTS.read_text().splitlines()
        if re.match(r"\s*ray\s*==", line)
    ]
    assert len(pins) == 1, f"{rel(CONSTRAINTS)}: expected exactly one `ray==X.Y.Z` line, found {pins}"
    assert re.fullmatch(VERSION, pins[0]), f"{rel(CONSTRAINTS)}: ray pin {pins[0]!r} is not X.Y.Z"
    return pins[0]


# --------------------------------------------------------------------------------------------
# Every YAML file parses


def test_expected_files_exist() -> None:
    missing = [rel(p) for p in (CONSTRAINTS, DOCKERFILE, LAUNCHER, KUBERAY_CLUSTER, KUBERAY_JOB) if not p.is_file()]
    assert not missing, f"missing deployment files: {missing}"


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(INFRA)) for p in YAML_FILES])
def test_yaml_parses_to_a_mapping(path: Path) -> None:
    load(path)


# --------------------------------------------------------------------------------------------
# Ray cluster launcher


def test_launcher_config_passes_ray_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(LAUNCHER)
    validate_config(copy.deepcopy(raw))

    # prepare_config merges the provider's defaults.yaml and fills per-node-type worker bounds;
    # it reads only local files (the EC2 calls happen later, in `ray up`'s bootstrap). Sockets
    # are refused so that a Ray release which starts reaching AWS here fails this test instead of
    # hanging it.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepare_config tried to use the network")

    with monkeypatch.context() as offline:
        offline.setattr(socket.socket, "connect", refuse)
        offline.setattr(socket, "create_connection", refuse)
        offline.setattr(socket, "getaddrinfo", refuse)
        prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)

    # Ray's defaults must not leak in: its setup commands pip-install a Ray wheel over the image's.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "initialization_commands"):
        assert prepared[key] == [], f"{rel(LAUNCHER)}: {key} after prepare_config is {prepared[key]}"

    node_types = prepared["available_node_types"]
    head = node_types[prepared["head_node_type"]]
    assert head["max_workers"] == 0, f"{rel(LAUNCHER)}: head node type would scale: {head}"
    assert head["resources"].get("CPU", 0) > 0, f"{rel(LAUNCHER)}: the head offers no CPU for the job driver"
    assert "GPU" not in head["resources"], f"{rel(LAUNCHER)}: the head advertises GPUs: {head['resources']}"
    gpu_types = {name: t for name, t in node_types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, f"{rel(LAUNCHER)}: no node type offers a GPU"
    for name, node_type in gpu_types.items():
        assert node_type["min_workers"] == 0, (
            f"{rel(LAUNCHER)}: {name} keeps idle GPU nodes (min_workers {node_type['min_workers']})"
        )
        assert node_type["max_workers"] <= prepared["max_workers"], (
            f"{rel(LAUNCHER)}: {name} max_workers above the global cap"
        )

    docker = prepared["docker"]
    assert "--gpus all" in docker.get("worker_run_options", []), f"{rel(LAUNCHER)}: GPU workers' containers get no GPUs"
    assert not any(
        "--gpus" in option for option in docker.get("run_options", []) + docker.get("head_run_options", [])
    ), f"{rel(LAUNCHER)}: --gpus on the CPU head makes docker refuse to start its container"

    head_start = " ".join(prepared["head_start_ray_commands"])
    for flag in (
        "--head",
        "--port=6379",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
        "--dashboard-host=0.0.0.0",
    ):
        assert flag in head_start, f"{rel(LAUNCHER)}: head_start_ray_commands lack {flag}"
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(prepared["worker_start_ray_commands"]), (
        f"{rel(LAUNCHER)}: workers do not join the head's GCS port"
    )
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert prepared[key][0] == "ray stop", (
            f"{rel(LAUNCHER)}: {key} must stop a running Ray first (restarts reuse nodes)"
        )


# --------------------------------------------------------------------------------------------
# KubeRay
#
# The parts of the ray.io/v1 CRDs these manifests use, written out from KubeRay's Go types
# (ray-project/kuberay ray-operator/apis/ray/v1/raycluster_types.go and rayjob_types.go): a field
# without `omitempty`/`+optional` is required, and the property lists are complete for the spec
# structs, so a misspelt key fails here. (The API server would prune an unknown key silently, a
# typo such as `enableInTreeAutoScaling` would just switch autoscaling off.) Pod templates are
# checked only in the parts used here; the whole CRD is 700 KB of core/v1 PodSpec.

INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# The resource.Quantity pattern of the generated CRD.
QUANTITY = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {
            "type": "string",
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        },
    ]
}
CONTAINER = {
    "type": "object",
    # `image` is optional in core/v1 Container (for controllers that fill it in); KubeRay does not.
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "image": {"type": "string"},
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {
                    "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    # IANA_SVC_NAME: at most 15 characters.
                    "name": {"type": "string", "maxLength": 15, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                },
            },
        },
        "envFrom": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "secretRef": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                    "configMapRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
            },
        },
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "requests": {"type": "object", "additionalProperties": QUANTITY},
                "limits": {"type": "object", "additionalProperties": QUANTITY},
            },
        },
    },
}
POD_TEMPLATE = {
    "type": "object",
    # `spec` is optional in PodTemplateSpec, but KubeRay takes the Ray container from it.
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "tolerations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "operator": {"enum": ["Exists", "Equal"]},
                            "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                        },
                    },
                },
                "serviceAccountName": {"type": "string"},
            },
        },
    },
}
RAY_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "additionalProperties": False,
    "properties": {
        "suspend": {"type": "boolean"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": {
            "type": "object",
            "properties": {
                "idleTimeoutSeconds": INT32,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
            },
        },
        "headServiceAnnotations": STRING_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object", "required": ["redisAddress"]},
        "headGroupSpec": {
            "type": "object",
            "required": ["rayStartParams", "template"],
            "additionalProperties": False,
            "properties": {
                "template": POD_TEMPLATE,
                "headService": {"type": "object"},
                "enableIngress": {"type": "boolean"},
                "rayStartParams": STRING_MAP,
                "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
            },
        },
        "rayVersion": {"type": "string"},
        "workerGroupSpecs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
                "additionalProperties": False,
                "properties": {
                    "suspend": {"type": "boolean"},
                    "groupName": {"type": "string", "minLength": 1},
                    "replicas": INT32,
                    "minReplicas": INT32,
                    "maxReplicas": INT32,
                    "idleTimeoutSeconds": INT32,
                    "rayStartParams": STRING_MAP,
                    "template": POD_TEMPLATE,
                    "scaleStrategy": {"type": "object"},
                    "numOfHosts": INT32,
                },
            },
        },
    },
}
RAY_JOB_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "backoffLimit": INT32,
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": POD_TEMPLATE,
        "metadata": STRING_MAP,
        "clusterSelector": STRING_MAP,
        "submitterConfig": {"type": "object"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "deletionPolicy": {"enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": INT32,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    },
}


def manifest_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            # A DNS-1123 label: KubeRay derives Service and Pod names from it.
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                },
            },
            "spec": spec,
        },
    }


def schema_errors(document: dict[str, Any], schema: dict[str, Any], path: Path) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{rel(path)}: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def cluster_spec(path: Path) -> dict[str, Any]:
    document = load(path)
    return document["spec"]["rayClusterSpec"] if document["kind"] == "RayJob" else document["spec"]


def test_kuberay_manifests_match_the_crds() -> None:
    errors = schema_errors(
        load(KUBERAY_CLUSTER), manifest_schema("RayCluster", RAY_CLUSTER_SPEC), KUBERAY_CLUSTER
    ) + schema_errors(load(KUBERAY_JOB), manifest_schema("RayJob", RAY_JOB_SPEC), KUBERAY_JOB)
    assert not errors, "\n".join(errors)


def test_the_schema_catches_what_it_should() -> None:
    # The checks above must be able to fail: break the real manifest in three ways.
    document = load(KUBERAY_CLUSTER)
    spec = document["spec"]
    spec["enableInTreeAutoScaling"] = spec.pop("enableInTreeAutoscaling", True)
    del spec["workerGroupSpecs"][0]["maxReplicas"]
    spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    errors = "\n".join(schema_errors(document, manifest_schema("RayCluster", RAY_CLUSTER_SPEC), KUBERAY_CLUSTER))
    assert "enableInTreeAutoScaling" in errors
    assert "'maxReplicas' is a required property" in errors
    assert "0 is not of type 'string'" in errors


@pytest.mark.parametrize("path", [KUBERAY_CLUSTER, KUBERAY_JOB], ids=lambda p: p.name)
def test_kuberay_containers_and_ports_are_consistent(path: Path) -> None:
    spec = cluster_spec(path)
    assert spec.get("enableInTreeAutoscaling") is True, f"{rel(path)}: autoscaling is off"

    head = spec["headGroupSpec"]
    # KubeRay runs Ray in the first container of each pod template.
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["name"] == "ray-head", f"{rel(path)}: first head container is {head_container['name']!r}"
    ports = {p.get("name"): p["containerPort"] for p in head_container.get("ports", [])}
    assert ports == HEAD_PORTS, f"{rel(path)}: head ports {ports}, expected {HEAD_PORTS}"
    start = head["rayStartParams"]
    assert start.get("dashboard-host") == "0.0.0.0", f"{rel(path)}: dashboard bound to {start.get('dashboard-host')!r}"
    for param, port_name in (
        ("port", "gcs-server"),
        ("dashboard-port", "dashboard"),
        ("ray-client-server-port", "client"),
    ):
        if param in start:
            assert int(start[param]) == HEAD_PORTS[port_name], (
                f"{rel(path)}: rayStartParams {param}={start[param]} but the {port_name} port is {HEAD_PORTS[port_name]}"
            )
    assert "nvidia.com/gpu" not in head_container.get("resources", {}).get("limits", {}), (
        f"{rel(path)}: the head asks for a GPU"
    )

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert len(groups) == len(spec["workerGroupSpecs"]), f"{rel(path)}: duplicate groupName"
    assert "gpu" in groups, f"{rel(path)}: no worker group named gpu, got {sorted(groups)}"
    for name, group in groups.items():
        low, high, replicas = group["minReplicas"], group["maxReplicas"], group.get("replicas", 0)
        assert low <= replicas <= high, f"{rel(path)}: group {name}: replicas {replicas} outside [{low}, {high}]"
        worker = group["template"]["spec"]["containers"][0]
        assert worker["name"] == "ray-worker", f"{rel(path)}: group {name}: first container is {worker['name']!r}"
        assert worker["image"] == head_container["image"], (
            f"{rel(path)}: group {name} runs {worker['image']}, the head {head_container['image']}"
        )
        assert worker.get("envFrom") == head_container.get("envFrom"), (
            f"{rel(path)}: group {name} gets other settings than the head"
        )
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert int(gpu["limits"].get("nvidia.com/gpu", 0)) == 1, f"{rel(path)}: gpu group limits {gpu['limits']}"
    if "num-gpus" in groups["gpu"]["rayStartParams"]:
        assert int(groups["gpu"]["rayStartParams"]["num-gpus"]) == 1, (
            f"{rel(path)}: num-gpus disagrees with the GPU limit"
        )
    # Kubernetes rejects a request for an extended resource that differs from its limit.
    if "nvidia.com/gpu" in gpu.get("requests", {}):
        assert str(gpu["requests"]["nvidia.com/gpu"]) == str(gpu["limits"]["nvidia.com/gpu"]), (
            f"{rel(path)}: GPU request != limit"
        )

    secrets = {source["secretRef"]["name"] for source in head_container.get("envFrom", []) if "secretRef" in source}
    assert secrets == {"genimg-env"}, f"{rel(path)}: head env comes from secrets {secrets}"


def test_rayjob_cluster_has_the_raycluster_shape() -> None:
    def shape(spec: dict[str, Any]) -> dict[str, Any]:
        def containers(template: dict[str, Any]) -> list[tuple[Any, ...]]:
            return [
                (
                    c["name"],
                    c["image"],
                    sorted((p.get("name"), p["containerPort"]) for p in c.get("ports", [])),
                    c.get("envFrom"),
                    c.get("resources"),
                )
                for c in template["spec"]["containers"]
            ]

        return {
            "rayVersion": spec.get("rayVersion"),
            "head": (spec["headGroupSpec"]["rayStartParams"], containers(spec["headGroupSpec"]["template"])),
            "workers": {
                g["groupName"]: (g["minReplicas"], g["maxReplicas"], g["rayStartParams"], containers(g["template"]))
                for g in spec.get("workerGroupSpecs", [])
            },
        }

    cluster, job = shape(cluster_spec(KUBERAY_CLUSTER)), shape(cluster_spec(KUBERAY_JOB))
    for key in cluster:
        assert job[key] == cluster[key], (
            f"{rel(KUBERAY_JOB)}: rayClusterSpec {key} differs from {rel(KUBERAY_CLUSTER)}:\n{job[key]}\nvs\n{cluster[key]}"
        )


def dockerfile_workdir_and_copied() -> tuple[PurePosixPath, set[str]]:
    workdir, copied = PurePosixPath("/"), set()
    for line in DOCKERFILE.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0].upper() == "WORKDIR":
            workdir = workdir / words[1]
        elif words[0].upper() == "COPY":
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            destination = workdir / words[-1]
            for source in sources:
                target = destination / source if words[-1].endswith("/") else destination
                copied.add(str(target))
    return workdir, copied


def test_rayjob_runs_the_retrain_flow_from_the_image() -> None:
    job = load(KUBERAY_JOB)["spec"]
    assert job.get("shutdownAfterJobFinishes") is True, f"{rel(KUBERAY_JOB)}: the job's cluster outlives it"
    assert isinstance(job.get("ttlSecondsAfterFinished"), int), f"{rel(KUBERAY_JOB)}: no ttlSecondsAfterFinished"
    assert job.get("submissionMode") == "K8sJobMode", (
        f"{rel(KUBERAY_JOB)}: submissionMode {job.get('submissionMode')!r}"
    )

    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict), (
        f"{rel(KUBERAY_JOB)}: runtimeEnvYAML is {type(runtime_env).__name__}, not a mapping"
    )
    env_vars = runtime_env.get("env_vars", {})
    # Ray rejects non-string env_vars values; YAML turns an unquoted 1 or true into int/bool.
    bad = {k: v for k, v in env_vars.items() if not isinstance(v, str)}
    assert not bad, f"{rel(KUBERAY_JOB)}: runtimeEnvYAML env_vars that are not strings: {bad}"
    assert "PREFECT_API_URL" in env_vars, f"{rel(KUBERAY_JOB)}: runtimeEnvYAML env_vars has no PREFECT_API_URL"

    words = shlex.split(job["entrypoint"])
    assert words[:2] == ["genimg", "retrain"], f"{rel(KUBERAY_JOB)}: entrypoint {job['entrypoint']!r}"
    config = PurePosixPath(words[words.index("--config") + 1])
    workdir, copied = dockerfile_workdir_and_copied()
    # The config is read inside the image: it must lie under something the Dockerfile copies,
    # and that something must be the repository's own file.
    assert any(config == PurePosixPath(c) or PurePosixPath(c) in config.parents for c in copied), (
        f"{rel(KUBERAY_JOB)}: --config {config} is not under anything {rel(DOCKERFILE)} copies ({sorted(copied)})"
    )
    assert (ROOT / config.relative_to(workdir)).is_file(), (
        f"{rel(KUBERAY_JOB)}: --config {config} is {config.relative_to(workdir)} in the repository, which does not exist"
    )


# --------------------------------------------------------------------------------------------
# One Ray version everywhere


def test_ray_version_agrees_everywhere() -> None:
    import ray

    pinned = pinned_ray_version()
    mismatches: list[str] = []
    if ray.__version__ != pinned:
        mismatches.append(f"installed ray (.venv): {ray.__version__}")

    for path in (KUBERAY_CLUSTER, KUBERAY_JOB):
        version = cluster_spec(path).get("rayVersion")
        if version != pinned:
            mismatches.append(f"{rel(path)}: rayVersion {version!r}")

    from_lines = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.upper().startswith("FROM ")]
    assert from_lines, f"{rel(DOCKERFILE)}: no FROM line"
    for image in from_lines:
        if not image.startswith("rayproject/ray:"):
            mismatches.append(f"{rel(DOCKERFILE)}: FROM {image} is not a rayproject/ray image")

    base_refs = genimg_refs = 0
    for path in TEXT_FILES:
        text = path.read_text()
        # Ray's images are tagged <version>[-pyXY][-gpu|-cpu|...].
        for tag in re.findall(r"rayproject/ray(?:-ml)?:(\S+)", text):
            base_refs += 1
            version = re.match(VERSION, tag)
            if version is None or version.group() != pinned:
                mismatches.append(f"{rel(path)}: rayproject/ray:{tag}")
        for genimg_version, ray_version in re.findall(rf"genimg:([^\s\"'@]+?)-ray({VERSION})-", text):
            genimg_refs += 1
            if ray_version != pinned:
                mismatches.append(f"{rel(path)}: genimg image tag {genimg_version}-ray{ray_version}-…")
            if genimg_version != genimg.__version__:
                mismatches.append(
                    f"{rel(path)}: genimg image tag names genimg {genimg_version}, the package is {genimg.__version__}"
                )
    # The scan must have found what the files are known to contain, or it checked nothing.
    assert base_refs >= 1, "no rayproject/ray image reference found under infra/"
    assert genimg_refs >= 3, (
        f"only {genimg_refs} genimg image tags found under infra/ (launcher, RayCluster, RayJob expected)"
    )

    launcher_image = load(LAUNCHER)["docker"]["image"]
    if f"-ray{pinned}-" not in launcher_image:
        mismatches.append(f"{rel(LAUNCHER)}: docker.image {launcher_image}")

    assert not mismatches, f"ray=={pinned} in {rel(CONSTRAINTS)}, but:\n" + "\n".join(mismatches)
