#!/usr/bin/env python3
"""Check deploy/kubernetes/daemonset.yaml without a cluster.

1. Structure: the properties pinsight depends on and promises (host PID namespace, metrics
   port, read-only host mounts, the same capabilities as deploy/pinsight.service, each explained in the unit's header, CPU and
   memory requests within their limits, Prometheus annotations, tolerations) are there and
   agree with each other.
2. Schema: every object is validated against the Kubernetes OpenAPI schemas, strictly
   (unknown fields are errors), with the `kubernetes-validate` package when it is installed
   (`pip install kubernetes-validate`; it ships the schemas, no network needed). Without it
   this part is skipped with a notice, or fails with --require-schema.

Usage: deploy/check-manifests.py [--require-schema] [--kubernetes-version 1.30.0] [FILE]
Exit status: 0 when all checks pass, 1 when one fails, 2 when the file cannot be read.
"""

import argparse
import os
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("check-manifests: PyYAML missing: pip install pyyaml (or apt-get install python3-yaml)")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FILE = os.path.join(HERE, "kubernetes", "daemonset.yaml")
UNIT_FILE = os.path.join(HERE, "pinsight.service")
QUANTITY_SUFFIXES = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9,
                     "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
READ_ONLY_HOST_PATHS = {"/sys": "/sys", "/sys/kernel/tracing": "/sys/kernel/tracing",
                        "/run/libvirt": "/run/libvirt"}


class Checker:
    """Collects failed expectations, each naming the object and the field."""

    def __init__(self):
        self.problems = []

    def expect(self, ok, what):
        if not ok:
            self.problems.append(what)
        return ok


def unit_capabilities(path):
    """CAP_* names of the unit's CapabilityBoundingSet=, without the CAP_ prefix."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*CapabilityBoundingSet=(.*)", line)
            if m:
                caps = {c.removeprefix("CAP_") for c in m.group(1).split()}
                break
        else:
            raise ValueError(f"{path}: no CapabilityBoundingSet= line")
    # Every capability the unit grants has its "# - CAP_X ..." reason in the header.
    with open(path, encoding="utf-8") as f:
        explained = set(re.findall(r"^# - CAP_([A-Z_]+)", f.read(), re.M))
    unexplained = caps - explained
    if unexplained:
        raise ValueError(f"{path}: capabilities without a '# - CAP_X' reason in the header: "
                         f"{sorted(unexplained)}")
    return caps


def quantity(text):
    """A Kubernetes quantity ("50m", "64Mi", "1") as a number, or None when absent/unknown."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text)) if text is not None else None
    if not m or m.group(2) not in QUANTITY_SUFFIXES:
        return None
    return float(m.group(1)) * QUANTITY_SUFFIXES[m.group(2)]


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d.get("kind"), []).append(d)
    return out


def check_structure(docs, unit_caps):
    """Returns the list of problems with the manifests' structure."""
    c = Checker()
    kinds = by_kind(docs)
    for kind in ("Namespace", "ServiceAccount", "DaemonSet"):
        c.expect(len(kinds.get(kind, [])) == 1, f"want exactly one {kind}, found {len(kinds.get(kind, []))}")
    if c.problems:
        return c.problems
    ns = kinds["Namespace"][0]["metadata"]["name"]
    for d in docs:
        if d.get("kind") != "Namespace":
            c.expect(d["metadata"].get("namespace") == ns,
                     f"{d['kind']}/{d['metadata'].get('name')}: namespace is not {ns!r}")
    sa = kinds["ServiceAccount"][0]
    ds = kinds["DaemonSet"][0]
    name = f"DaemonSet/{ds['metadata']['name']}"
    spec = ds["spec"]
    tmpl = spec["template"]
    pod = tmpl["spec"]

    selector = spec.get("selector", {}).get("matchLabels", {})
    labels = tmpl.get("metadata", {}).get("labels", {})
    c.expect(selector and all(labels.get(k) == v for k, v in selector.items()),
             f"{name}: selector {selector} does not match the pod labels {labels}")
    c.expect(pod.get("serviceAccountName") == sa["metadata"]["name"],
             f"{name}: serviceAccountName is not the ServiceAccount {sa['metadata']['name']!r}")
    c.expect(pod.get("hostPID") is True, f"{name}: hostPID must be true (QEMU threads in /proc)")
    c.expect(pod.get("hostNetwork") is True, f"{name}: hostNetwork must be true (one target per host)")
    c.expect(any(t.get("operator") == "Exists" and "key" not in t and "effect" not in t
                 for t in pod.get("tolerations", [])),
             f"{name}: needs a toleration for every taint (operator: Exists, no key)")
    c.expect(any("gpu" in k for k in pod.get("nodeSelector", {})),
             f"{name}: nodeSelector must select the GPU hypervisors")
    c.expect(pod.get("automountServiceAccountToken") is False,
             f"{name}: the pod needs no Kubernetes API token")

    containers = pod.get("containers", [])
    if not c.expect(len(containers) == 1, f"{name}: want one container"):
        return c.problems
    ctr = containers[0]
    cname = f"{name} container {ctr.get('name')}"
    sc = ctr.get("securityContext", {})
    c.expect(sc.get("privileged") is False, f"{cname}: privileged must be false")
    c.expect(sc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation must be false")
    c.expect(sc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem must be true")
    caps = sc.get("capabilities", {})
    c.expect(caps.get("drop") == ["ALL"], f"{cname}: capabilities.drop must be [ALL]")
    added = set(caps.get("add", []))
    c.expect(added == unit_caps,
             f"{cname}: capabilities.add {sorted(added)} differ from the systemd unit's {sorted(unit_caps)}")

    res = ctr.get("resources", {})
    for kind in ("cpu", "memory"):
        req = quantity(res.get("requests", {}).get(kind))
        lim = quantity(res.get("limits", {}).get(kind))
        if c.expect(req is not None and lim is not None,
                    f"{cname}: resources need a {kind} request and limit"):
            c.expect(req <= lim, f"{cname}: {kind} request above its limit")

    ports = {p.get("name"): p for p in ctr.get("ports", [])}
    metrics = ports.get("metrics")
    if c.expect(metrics is not None, f"{cname}: no port named metrics"):
        port = metrics["containerPort"]
        c.expect(metrics.get("hostPort") in (None, port), f"{cname}: hostPort differs from containerPort")
        ann = tmpl.get("metadata", {}).get("annotations", {})
        c.expect(ann.get("prometheus.io/scrape") == "true", f"{name}: annotation prometheus.io/scrape != \"true\"")
        c.expect(ann.get("prometheus.io/port") == str(port),
                 f"{name}: annotation prometheus.io/port {ann.get('prometheus.io/port')!r} != {port}")
        c.expect(ann.get("prometheus.io/path") == "/metrics", f"{name}: annotation prometheus.io/path != /metrics")
        probe = ctr.get("livenessProbe", {}).get("httpGet", {})
        c.expect(probe.get("path") == "/metrics" and probe.get("port") in (port, "metrics"),
                 f"{cname}: livenessProbe must GET /metrics on port {port}")

    cmd = ctr.get("command", []) + ctr.get("args", [])
    c.expect(cmd[:2] == ["/usr/bin/pinsight", "run"], f"{cname}: command must run /usr/bin/pinsight run")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    for m in ctr.get("volumeMounts", []):
        c.expect(m["name"] in volumes, f"{cname}: mount {m['mountPath']} uses undefined volume {m['name']!r}")
    for host_path, mount_path in READ_ONLY_HOST_PATHS.items():
        m = mounts.get(mount_path)
        if not c.expect(m is not None, f"{cname}: {mount_path} is not mounted"):
            continue
        c.expect(m.get("readOnly") is True, f"{cname}: {mount_path} must be mounted readOnly")
        vol = volumes.get(m["name"], {})
        c.expect(vol.get("hostPath", {}).get("path") == host_path,
                 f"{cname}: {mount_path} must come from hostPath {host_path}")
    for m in ctr.get("volumeMounts", []):
        # The writable mounts: the host's /run/pinsight, where the instance lock lives, and
        # /var/lib/pinsight, the records of QEMUs without libvirt ([qmp] state_dir).
        if m["mountPath"] in ("/run/pinsight", "/var/lib/pinsight"):
            vol = volumes.get(m["name"], {})
            c.expect(vol.get("hostPath", {}).get("path") == m["mountPath"],
                     f"{cname}: {m['mountPath']} must be the host's (one per host)")
            continue
        c.expect(m.get("readOnly") is True, f"{cname}: mount {m['mountPath']} must be readOnly")
    config = [a for a in cmd if a.endswith(".toml")]
    if config:
        directory = os.path.dirname(config[0])
        c.expect(directory in mounts, f"{cname}: config {config[0]} is not on a mounted volume")
    return c.problems


def check_schema(docs, version):
    """Returns (ran, problems) from strict OpenAPI validation, or (False, []) without the package."""
    try:
        import kubernetes_validate
    except ImportError:
        return False, []
    problems = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{d.get('kind')}/{d.get('metadata', {}).get('name')}: schema: "
                            f"{'.'.join(str(p) for p in e.path)}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            problems.append(f"{d.get('kind')}: no usable schema for Kubernetes {version}: {e}")
    return True, problems


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default=DEFAULT_FILE)
    parser.add_argument("--unit", default=UNIT_FILE, help="systemd unit whose capabilities must match")
    parser.add_argument("--kubernetes-version", default="1.30.0")
    parser.add_argument("--require-schema", action="store_true",
                        help="fail when kubernetes-validate is not installed")
    args = parser.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        unit_caps = unit_capabilities(args.unit)
    except (OSError, yaml.YAMLError, ValueError) as e:
        print(f"check-manifests: {e}", file=sys.stderr)
        return 2
    problems = check_structure(docs, unit_caps)
    print(f"check-manifests: structure of {len(docs)} objects: "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    ran, schema_problems = check_schema(docs, args.kubernetes_version)
    if ran:
        print(f"check-manifests: strict schema validation (kubernetes-validate, Kubernetes "
              f"{args.kubernetes_version}): {'OK' if not schema_problems else 'FAILED'}")
    elif args.require_schema:
        schema_problems = ["kubernetes-validate not installed (pip install kubernetes-validate)"]
    else:
        print("check-manifests: kubernetes-validate not installed: schema validation skipped "
              "(pip install kubernetes-validate)")
    for p in problems + schema_problems:
        print(f"check-manifests: {p}", file=sys.stderr)
    return 1 if problems or schema_problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
