#!/usr/bin/env python3
"""Print the PromQL of every panel target of pinsight's Grafana dashboards, ready to run.

Grafana variables are replaced by the values given on the command line, so the end-to-end test
can send each query to a real Prometheus that scraped the real daemon:

    dashboards/extract_queries.py 'INSTANCE_REGEX' 'DOMAIN_REGEX' RATE_INTERVAL [INTERVAL]

$instance / ${instance} / [[instance]] (and the same for domain) become the regexes as given,
$__rate_interval the rate interval, and $__interval the interval (default: the rate interval).
A query that uses any other variable is an error: the test would otherwise send Prometheus a
query it cannot parse.

Options:
  --json              one JSON array of {dashboard, panel, ref_id, instant, format, expr}
  --dir DIR           read DIR/*.json instead of the directory of this script
  --lint              also check the dashboards' structure (uids, ids, variables, units, filters)
  --check-promtool    also check every query's syntax with `promtool check rules`

Exit status: 0 on success, 1 when a check fails, 2 on bad usage or unreadable dashboards.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# ${name}, ${name:format}, $name and the deprecated [[name]] / [[name:format]].
VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)(?::[\w]+)?\]\]")
REQUIRED_VARIABLES = {"datasource", "instance", "domain"}


class DashboardError(Exception):
    """A dashboard that cannot be read or a query that cannot be made concrete."""


def walk_panels(panels):
    """Yields every panel, descending into rows (collapsed rows keep theirs in `panels`)."""
    for panel in panels or []:
        yield panel
        yield from walk_panels(panel.get("panels"))


def load_dashboards(directory):
    """Returns [(file name, dashboard)] for every *.json in directory, sorted by name."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    if not names:
        raise DashboardError(f"{directory}: no dashboard (*.json) found")
    out = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                dashboard = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise DashboardError(f"{path}: cannot read dashboard: {e}") from e
        # An export wrapped for the HTTP API ({"dashboard": {...}}) is accepted too.
        out.append((name, dashboard.get("dashboard", dashboard)))
    return out


def substitute(expr, values, where):
    """Replaces Grafana variables in expr; raises DashboardError naming an unknown one."""

    def replace(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise DashboardError(f"{where}: unknown variable ${name} in query: {expr}")
        return values[name]

    return VARIABLE.sub(replace, expr)


def extract(dashboards, values):
    """Returns one record per panel target that has an expr, with variables substituted."""
    records = []
    for name, dashboard in dashboards:
        for panel in walk_panels(dashboard.get("panels")):
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if not expr or target.get("hide"):
                    continue
                where = f"{name}: panel {panel.get('title')!r} target {target.get('refId')}"
                concrete = " ".join(substitute(expr, values, where).split())
                records.append({
                    "dashboard": name,
                    "panel": panel.get("title", ""),
                    "ref_id": target.get("refId", ""),
                    "instant": bool(target.get("instant")) and not target.get("range", False),
                    "format": target.get("format", "time_series"),
                    "expr": concrete,
                })
    return records


def lint(dashboards):
    """Returns a list of problems with the dashboards' structure (empty when all is well)."""
    problems, uids = [], {}
    for name, d in dashboards:
        uid = d.get("uid")
        if not uid:
            problems.append(f"{name}: no uid")
        elif uid in uids:
            problems.append(f"{name}: uid {uid!r} also used by {uids[uid]}")
        else:
            uids[uid] = name
        if d.get("schemaVersion") != 39:
            problems.append(f"{name}: schemaVersion is {d.get('schemaVersion')}, want 39")
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        missing = REQUIRED_VARIABLES - variables.keys()
        if missing:
            problems.append(f"{name}: templating lacks {sorted(missing)}")
        if variables.get("datasource", {}).get("type") != "datasource":
            problems.append(f"{name}: variable datasource is not of type datasource")
        ids = {}
        for panel in walk_panels(d.get("panels")):
            title = panel.get("title", "")
            pid = panel.get("id")
            if pid in ids:
                problems.append(f"{name}: panel id {pid} used by {title!r} and {ids[pid]!r}")
            ids[pid] = title
            if not isinstance(panel.get("gridPos"), dict):
                problems.append(f"{name}: panel {title!r} has no gridPos")
            if panel.get("type") == "row":
                continue
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if not unit:
                problems.append(f"{name}: panel {title!r} has no unit")
            if panel.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{name}: panel {title!r} does not use ${{datasource}}")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{name}: panel {title!r} has no query")
            ref_ids = [t.get("refId") for t in targets]
            if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
                problems.append(f"{name}: panel {title!r} has missing or repeated refIds")
            for t in targets:
                expr = t.get("expr", "")
                if "$instance" not in expr:
                    problems.append(f"{name}: panel {title!r} {t.get('refId')}: no $instance filter")
                if (not t.get("instant") and t.get("format", "time_series") == "time_series"
                        and not t.get("legendFormat")):
                    problems.append(f"{name}: panel {title!r} {t.get('refId')}: no legend")
    return problems


def check_with_promtool(records):
    """Checks each expr's syntax by loading it as a recording rule; returns promtool's verdict."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return ["promtool not found: install the Debian package 'prometheus'"]
    lines = ["groups:", "  - name: dashboard_queries", "    rules:"]
    for i, r in enumerate(records):
        lines.append(f"      - record: dashboard_query_{i}")
        lines.append(f"        expr: {json.dumps(r['expr'])}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.rules.yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        run = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if run.returncode != 0:
        return [f"promtool check rules failed:\n{run.stdout}{run.stderr}"]
    print(f"promtool: {len(records)} queries parse", file=sys.stderr)
    return []


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instance", help="regex substituted for $instance")
    parser.add_argument("domain", help="regex substituted for $domain")
    parser.add_argument("rate_interval", help="range substituted for $__rate_interval, e.g. 1m")
    parser.add_argument("interval", nargs="?", help="range substituted for $__interval "
                        "(default: the rate interval)")
    parser.add_argument("--dir", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--lint", action="store_true")
    parser.add_argument("--check-promtool", action="store_true")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", args.rate_interval):
        parser.error(f"rate interval {args.rate_interval!r} is not a PromQL duration (e.g. 1m)")
    interval = args.interval or args.rate_interval
    if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", interval):
        parser.error(f"interval {interval!r} is not a PromQL duration (e.g. 30s)")
    values = {"instance": args.instance, "domain": args.domain,
              "__rate_interval": args.rate_interval, "__interval": interval}
    try:
        dashboards = load_dashboards(args.dir)
        records = extract(dashboards, values)
    except (OSError, DashboardError) as e:
        print(f"extract_queries: {e}", file=sys.stderr)
        return 2
    problems = lint(dashboards) if args.lint else []
    if args.check_promtool:
        problems += check_with_promtool(records)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            print(r["expr"])
    for p in problems:
        print(f"extract_queries: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
