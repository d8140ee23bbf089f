#!/usr/bin/env python3
"""Security check of rendered Kubernetes workloads (the output of `helm template`).

Usage: python3 charts/security_check.py [--memory-limit-only] RENDERED.yaml [MORE.yaml ...]

Every container (init, regular and ephemeral) of every Pod template in Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs, CronJobs and Pods must:

- not be privileged, and not add capabilities; drop ALL capabilities;
- run as non-root: runAsNonRoot true (container or pod level) and no runAsUser/runAsGroup 0;
- have a read-only root filesystem (see EXCEPTIONS);
- set allowPrivilegeEscalation false;
- run under a seccomp profile (RuntimeDefault or Localhost, container or pod level);
- declare resource requests and limits for cpu and memory (with --memory-limit-only: requests for
  both and a memory limit; the operator's own children leave CPU unlimited on purpose, so a busy API
  pod is never throttled).

Pods must not use hostNetwork, hostPID, hostIPC or hostPath volumes.

Exits 1 and lists every violation when one is found; 0 otherwise.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import yaml

# Documented per-image exceptions: image repository prefix -> checks it may skip, and why. None are
# needed today: PostgreSQL, Redis and Kafka in evaluation mode run with a read-only root filesystem
# (their writable paths are emptyDir/PVC mounts). Add an entry here, with its reason, only when an
# image truly cannot run otherwise.
EXCEPTIONS: dict[str, dict[str, str]] = {}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    return (spec.get("template") or {}).get("spec")


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield field, container


def exempt(image: str, check: str) -> bool:
    for prefix, checks in EXCEPTIONS.items():
        if image.startswith(prefix) and check in checks:
            return True
    return False


def check_workload(obj: dict[str, Any], cpu_limit: bool = True) -> list[str]:
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    spec = pod_spec(obj)
    if spec is None:
        return [f"{name}: no pod template found"]
    problems: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            problems.append(f"{name}: {host} is set")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"{name}: hostPath volume {volume.get('name')}")
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0 or pod_sc.get("runAsGroup") == 0:
        problems.append(f"{name}: pod runs as user or group 0")

    for field, container in containers(spec):
        where = f"{name} {field[:-1]} {container.get('name')}"
        image = str(container.get("image", ""))
        sc = container.get("securityContext") or {}

        def fail(check: str, message: str) -> None:
            if not exempt(image, check):
                problems.append(f"{where}: {message}")

        if sc.get("privileged") is True:
            fail("privileged", "privileged")
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            fail("runAsNonRoot", "runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            fail("runAsNonRoot", "runAsUser is 0")
        if sc.get("runAsGroup", pod_sc.get("runAsGroup")) == 0:
            fail("runAsNonRoot", "runAsGroup is 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail("readOnlyRootFilesystem", "readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail("allowPrivilegeEscalation", "allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            fail("capabilities", "capabilities do not drop ALL")
        if capabilities.get("add"):
            fail("capabilities", f"adds capabilities {capabilities.get('add')}")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            fail("seccomp", f"seccomp profile is {seccomp or 'unset'}")
        if field == "ephemeralContainers":
            continue  # ephemeral containers cannot declare resources
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            values = resources.get(section) or {}
            for resource in ("cpu", "memory"):
                if section == "limits" and resource == "cpu" and not cpu_limit:
                    continue
                if resource not in values:
                    fail("resources", f"resources.{section}.{resource} is not set")
    return problems


def main(args: list[str]) -> int:
    cpu_limit = "--memory-limit-only" not in args
    paths = [a for a in args if a != "--memory-limit-only"]
    if not paths:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)  # the usage line
        return 2
    problems: list[str] = []
    workloads = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for obj in yaml.safe_load_all(handle):
                if not isinstance(obj, dict) or obj.get("kind") not in WORKLOAD_KINDS:
                    continue
                workloads += 1
                problems.extend(f"{path}: {p}" for p in check_workload(obj, cpu_limit))
    if workloads == 0:
        print("security_check: no workloads found in " + " ".join(paths), file=sys.stderr)
        return 1
    for problem in problems:
        print(f"security_check: {problem}", file=sys.stderr)
    if problems:
        print(f"security_check: {len(problems)} violation(s) in {workloads} workload(s)", file=sys.stderr)
        return 1
    print(f"security_check: {workloads} workload(s) hardened, 0 violations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
