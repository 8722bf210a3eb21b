"""The Grafana dashboard and the alert rules: the dashboard parses, every
PromQL expression in it and in the PrometheusRule passes `promtool check
rules`, and every metric and label they use is exposed by a running
kvsession-server (tiny model).
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib as lib  # noqa: E402

DASHBOARD = os.path.join(lib.ROOT, "deploy", "grafana",
                         "kvsession-dashboard.json")
RULES = os.path.join(lib.ROOT, "deploy", "k8s", "base", "prometheusrule.yaml")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                exprs.append((p["title"], t["expr"]))
    walk(dash["panels"])
    return exprs


def check_with_promtool(promtool, groups, workdir, name):
    import yaml
    path = os.path.join(workdir, f"{name}.rules.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"groups": groups}, f)
    r = lib.run([promtool, "check", "rules", path], timeout=60)
    lib.log(r.stdout.strip())
    assert r.returncode == 0, f"promtool rejected {name}:\n{r.stdout}{r.stderr}"


def check_names(expr, families):
    """Every kvsession_* metric of expr is exposed, with the labels used."""
    names = re.findall(r"\b(kvsession_[a-z0-9_]+)", expr)
    assert names, f"no kvsession metric in {expr!r}"
    for name in names:
        stripped = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                stripped = name[:-len(suffix)]
        assert name in families or stripped in families, (
            f"{name} (in {expr!r}) is not exposed")
    for name, matchers in re.findall(r"\b(kvsession_[a-z0-9_]+)\{([^}]*)\}",
                                     expr):
        for label in re.findall(r"([a-zA-Z_]+)\s*(?:=|!=|=~|!~)", matchers):
            assert label in families[name], (
                f"{name} has no label {label!r} (in {expr!r})")
    # Aggregation labels must exist on some metric of the expression,
    # except those Prometheus adds at scrape (job, instance) or the
    # Kubernetes service discovery adds (namespace, pod).
    exposed = set().union(*(families[n] for n in names))
    for group in re.findall(r"\b(?:by|ignoring|on)\s*\(([^)]*)\)", expr):
        for label in [g.strip() for g in group.split(",") if g.strip()]:
            assert label in exposed or label in (
                "le", "job", "instance", "namespace", "pod"), (
                f"label {label!r} of {expr!r} is not exposed")


def body(args, workdir):
    import yaml
    promtool = lib.require_tool("promtool", "/usr/bin/promtool")
    exprs = dashboard_exprs()
    assert len(exprs) >= 15, f"only {len(exprs)} dashboard queries"
    with open(RULES) as f:
        rule = yaml.safe_load(f)
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "KvSessionCacheHitRateLow", "KvSessionDeviceKvNearlyFull",
        "KvSessionSwapInSlow", "KvSessionSessionsDropped"}

    # Syntax and types, by Prometheus' own parser.
    check_with_promtool(promtool, rule["spec"]["groups"], workdir, "alerts")
    recording = [{"record": f"kvsession:dashboard_query_{i}:value",
                  "expr": e} for i, (_, e) in enumerate(exprs)]
    check_with_promtool(promtool, [{"name": "dashboard",
                                    "rules": recording}], workdir,
                        "dashboard")

    # Names and labels against a live server.
    model = lib.write_tiny_model(args.tiny_model_writer, workdir)
    with lib.Processes(workdir) as procs:
        port, metrics_port = lib.free_port(), lib.free_port()
        server = procs.start("server", lib.server_argv(
            args.server, model, port, metrics_port))
        lib.wait_port(metrics_port, timeout=60, proc=server)
        families = lib.scrape_metric_families(metrics_port)
    for title, expr in exprs:
        check_names(expr, families)
    for a in alerts:
        check_names(a["expr"], families)
    lib.log(f"{len(exprs)} dashboard queries and {len(alerts)} alerts use "
            f"only exposed metrics")


if __name__ == "__main__":
    lib.main(body)
