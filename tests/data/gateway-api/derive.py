"""Derives the strict JSON schemas of tests/data/gateway-api/ from the Gateway API's HTTPRoute CRDs.

    python3 derive.py <release tag> <commit> <standard CRD file> <experimental CRD file>

Each CRD file is `config/crd/{standard,experimental}/gateway.networking.k8s.io_httproutes.yaml` of
github.com/kubernetes-sigs/gateway-api at the release tag. What it keeps and changes:
- the `v1` version's `openAPIV3Schema`, descriptions dropped (they are most of the file);
- `additionalProperties: false` on every object that lists its properties and does not preserve
  unknown fields: the API server prunes unknown fields of a CRD object, and `kubectl apply`
  (strict field validation) refuses them, so a misspelt field is an error here too;
- `apiVersion` and `kind` fixed to gateway.networking.k8s.io/v1 HTTPRoute and required.
The CEL rules (`x-kubernetes-validations`) are kept for the reader but no JSON Schema validator runs
them: tests/it/helm_chart.rs asserts the ones the chart's routes depend on.
Needs PyYAML (the tests' venv has it: target/tools/venv/bin/python3).
"""

import hashlib
import json
import sys

import yaml


def strict(node):
    if isinstance(node, dict):
        node.pop("description", None)
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                strict(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                strict(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                strict(child)
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    return node


def derive(path, channel, tag, commit):
    raw = open(path, "rb").read()
    crd = yaml.safe_load(raw)
    assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] == channel, path
    assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == tag, path
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": "gateway.networking.k8s.io/v1"}
    schema["properties"]["kind"] = {"const": "HTTPRoute"}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    source = f"config/crd/{channel}/gateway.networking.k8s.io_httproutes.yaml"
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"HTTPRoute gateway.networking.k8s.io/v1, Gateway API {tag} {channel} channel",
        "$comment": (
            f"Derived by derive.py from github.com/kubernetes-sigs/gateway-api {tag} (commit {commit}), "
            f"{source} (sha256 {hashlib.sha256(raw).hexdigest()}): the v1 openAPIV3Schema, descriptions "
            "dropped, additionalProperties: false on every object with listed properties. CEL rules "
            "(x-kubernetes-validations) are not run by JSON Schema validators."
        ),
        **schema,
    }


def main():
    tag, commit, standard, experimental = sys.argv[1:5]
    for path, channel in ((standard, "standard"), (experimental, "experimental")):
        out = f"httproute-v1-{channel}.schema.json"
        with open(out, "w") as f:
            json.dump(derive(path, channel, tag, commit), f, indent=1, sort_keys=False)
            f.write("\n")
        print(out)


if __name__ == "__main__":
    main()
