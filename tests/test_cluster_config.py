"""cluster.yaml and deploy/: what Ray's launcher accepts, room for every pool the pipeline asks for, private ports.

The launcher is never run here; the config is checked the way `ray up` checks it (Ray's own
schema and validation, after Ray's defaults are filled in), and against the resource requests
of pipelines/render_pipeline.py, so a pool that no node type can host fails here, not on AWS.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from engines.registry import ENGINES, engine_class
from jobs import render
from pipelines import render_pipeline

REPO = Path(__file__).resolve().parents[1]
RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard and Jobs API, Ray Client
EVERYWHERE = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def locked_version(package: str) -> str:
    lock = (REPO / "requirements.lock").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", lock, re.MULTILINE).group(1)


def test_cluster_yaml_is_what_ray_up_accepts(cluster: dict) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    validate_config(prepare_config(cluster))  # what `ray up` runs: the schema again, node-type and worker bounds


def _requests(engine_name: str) -> dict[str, dict[str, float]]:
    """What each stage asks of a node for ``engine_name``, as build_dataset asks it."""
    engine = engine_class(engine_name)
    cpu_only = {
        "prepare": render_pipeline.PREPARE_CPUS,
        "finish": render_pipeline.FINISH_CPUS,
    }
    requests = {stage: {"CPU": cpus} for stage, cpus in cpu_only.items()}
    requests["render"] = ({"CPU": render_pipeline.GPU_RENDER_CPUS, "GPU": 1} if engine.needs_gpu
                          else {"CPU": render_pipeline.CPU_RENDER_CPUS})
    return requests


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
def test_every_stage_fits_a_node_type_that_can_be_launched(cluster: dict, engine_name: str) -> None:
    worker_types = {name: spec for name, spec in cluster["available_node_types"].items()
                    if name != cluster["head_node_type"] and spec.get("max_workers", 0) > 0}
    for stage, request in _requests(engine_name).items():
        hosts = [name for name, spec in worker_types.items()
                 if all(spec["resources"].get(resource, 0) >= amount for resource, amount in request.items())]
        assert hosts, f"no worker node type can host the {engine_name} engine's {stage} stage ({request})"
        if "GPU" not in request:  # CPU work needs no GPU node to run at all
            assert any(not worker_types[name]["resources"].get("GPU") for name in hosts), stage


def test_gpus_are_spot_and_bounded_and_the_head_is_on_demand(cluster: dict) -> None:
    node_types = cluster["available_node_types"]
    gpu_types = [spec for spec in node_types.values() if spec["resources"].get("GPU")]
    assert gpu_types
    for spec in gpu_types:
        assert spec["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert 0 <= spec["min_workers"] <= spec["max_workers"]
    head = node_types[cluster["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"]
    assert cluster["max_workers"] >= sum(spec.get("max_workers", 0) for spec in node_types.values())


def _open_to_everyone(rule: dict, port: int) -> bool:
    covers = rule.get("IpProtocol") == "-1" or rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535)
    ranges = ({r.get("CidrIp") for r in rule.get("IpRanges", [])}
              | {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])})
    return covers and bool(ranges & EVERYWHERE)


def test_ray_ports_stay_private_and_need_the_token(cluster: dict) -> None:
    rules = cluster["provider"].get("security_group", {}).get("IpPermissions", [])
    for port in RAY_PORTS:
        assert not any(_open_to_everyone(rule, port) for rule in rules), f"port {port} is open to the internet"
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[ =]127\.0\.0\.1\b", head_start)
    assert "0.0.0.0" not in head_start
    container_env = " ".join(cluster.get("docker", {}).get("run_options", []))
    for command in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command or "RAY_AUTH_MODE=token" in container_env, command
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # one token, on every node


def test_every_node_installs_this_project_with_the_locked_versions(cluster: dict) -> None:
    prepared = prepare_config(cluster)  # merges the global and per-type command lists as `ray up` does
    mount = next(remote for remote, local in cluster["file_mounts"].items() if local == ".")
    setups = {cluster["head_node_type"]: prepared["head_setup_commands"]}
    for name, spec in prepared["available_node_types"].items():
        if name != cluster["head_node_type"]:
            setups[name] = spec.get("worker_setup_commands", prepared["worker_setup_commands"])
    for name, commands in setups.items():
        joined = "\n".join(commands)
        assert f"-r {mount}/requirements.lock" in joined, name
        assert re.search(rf"pip install .*--no-deps {re.escape(mount)}\b", joined), name
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    images = [cluster["docker"]["image"]] + [spec["docker"]["worker_image"] for spec in
                                             cluster["available_node_types"].values() if "docker" in spec]
    for image in images:
        assert f":{ray.__version__}-{python}-" in image and ray.__version__ == locked_version("ray"), image
    assert f'"torch=={locked_version("torch")}"' in "\n".join(setups[cluster["head_node_type"]])


def test_kuberay_rayjob_runs_the_render_entry_point() -> None:
    [job] = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "kuberay-rayjob.yaml").read_text()) if doc]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:3] == ["python", "-m", "jobs.render"]
    parser = argparse.ArgumentParser()
    render.add_arguments(parser)
    parser.parse_args(command[3:])  # every option is one jobs.render knows
    cluster_spec = job["spec"]["rayClusterSpec"]
    assert cluster_spec["rayVersion"] == ray.__version__
    assert cluster_spec["authOptions"]["mode"] == "token"
    gpu_limits = [group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)
                  for group in cluster_spec["workerGroupSpecs"]]
    assert max(gpu_limits) == 1
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-gpu" in dockerfile
