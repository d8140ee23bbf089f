#!/usr/bin/env python3
"""Validates the PlamatioStore objects of rendered manifests against the CRD's openAPIV3Schema.

Usage: python3 charts/validate_stores.py CRD.yaml RENDERED.yaml [MORE.yaml ...]

kubernetes-validate has no schema for custom kinds (it only warns), so this checks them the way the
API server would: types, enums, ranges, required fields, and unknown fields (refused, like
`kubectl apply`'s strict field validation; the schema is structural, so the API server would silently
prune them otherwise). CEL rules are not evaluated, except the store name length rule.
Exits 1 on an invalid store, or when no store is found.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import jsonschema
import yaml


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of the schema that refuses properties it does not declare."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def main(args: list[str]) -> int:
    if len(args) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)  # the usage line
        return 2
    crd_path, paths = args[0], args[1:]
    crd = next(o for o in yaml.safe_load_all(open(crd_path, encoding="utf-8")) if o)
    kind = crd["spec"]["names"]["kind"]
    group = crd["spec"]["group"]
    schemas = {
        f"{group}/{v['name']}": strict(v["schema"]["openAPIV3Schema"]) for v in crd["spec"]["versions"]
    }
    # metadata is validated by the API server itself, not by the CRD schema.
    for schema in schemas.values():
        properties = schema.setdefault("properties", {})
        properties.pop("metadata", None)
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
    failures, stores = 0, 0
    for path in paths:
        for obj in yaml.safe_load_all(open(path, encoding="utf-8")):
            if not isinstance(obj, dict) or obj.get("kind") != kind:
                continue
            stores += 1
            name = f"{path}: {kind}/{obj['metadata'].get('name')}"
            schema = schemas.get(obj.get("apiVersion"))
            if schema is None:
                print(f"validate_stores: {name}: unknown apiVersion {obj.get('apiVersion')}", file=sys.stderr)
                failures += 1
                continue
            body = {k: v for k, v in obj.items() if k != "metadata"}
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=lambda e: list(e.path))
            if len(obj["metadata"].get("name", "")) > 40:
                print(f"validate_stores: {name}: a store name has at most 40 characters", file=sys.stderr)
                failures += 1
            for error in errors:
                location = ".".join(str(p) for p in error.path) or "(root)"
                print(f"validate_stores: {name}: {location}: {error.message}", file=sys.stderr)
            failures += len(errors)
    if stores == 0:
        print("validate_stores: no " + kind + " found", file=sys.stderr)
        return 1
    if failures:
        return 1
    print(f"validate_stores: {stores} {kind}(s) valid against the CRD schema")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
