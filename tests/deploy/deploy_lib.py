"""Shared helpers of the deployment tests: child processes that cannot
outlive the test, free loopback ports, the tiny model, Python gRPC stubs and
small HTTP and Prometheus clients.

Every test script exits 0 on success, 1 on failure and 77 (CTest's
SKIP_RETURN_CODE) only when a tool that scripts/setup.sh installs is
missing.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKIP = 77
# Where scripts/setup.sh installs the pinned PyPI tools (kubectl,
# kubernetes-validate) in a venv.
TOOLS_DIR = os.environ.get(
    "KVSESSION_TOOLS_DIR",
    os.path.join(os.path.expanduser("~"), ".cache", "kvsession", "deploy-tools"))


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def log(msg):
    print(msg, flush=True)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True, help="kvsession-server binary")
    p.add_argument("--tiny_model_writer", required=True,
                   help="kvsession-write-tiny-model binary")
    return p.parse_args()


def require_tool(name, path=None):
    """The absolute path of a tool, or a skip when it is not installed."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return found


def tools_bin(name):
    """A tool from the setup venv, or a skip."""
    path = os.path.join(TOOLS_DIR, "bin", name)
    if not os.access(path, os.X_OK):
        skip(f"{path} is missing (scripts/setup.sh installs it)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    # PR_SET_PDEATHSIG: a child is killed when the test process dies, even
    # when CTest kills the test on timeout.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def spawn(argv, logfile, env=None):
    """A child in its own process group (see kill_group)."""
    return subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True,
                            preexec_fn=_die_with_parent)


def kill_group(p):
    """Kills a child and everything it started (nginx workers survive their
    master otherwise)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Processes:
    """Child processes that are killed when the block ends, however."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type is not SystemExit:
            dump_logs(self)
        for p in self.procs:
            kill_group(p)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return False

    def start(self, name, argv):
        logfile = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        p = spawn(argv, logfile)
        p.name = name
        p.logpath = logfile.name
        self.procs.append(p)
        return p

    def log_of(self, p):
        with open(p.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")


def dump_logs(procs):
    for p in procs.procs:
        log(f"----- {p.name} (exit {p.poll()}) -----")
        log(procs.log_of(p)[-4000:])


def write_tiny_model(writer, workdir):
    path = os.path.join(workdir, "tiny.gguf")
    subprocess.run([writer, path], check=True, timeout=60)
    return path


def load_stubs(workdir):
    """Generates the Python stubs of the API into workdir and imports them."""
    try:
        import grpc  # noqa: F401  (Debian's python3-grpcio)
    except ImportError:
        skip("python3-grpcio is not installed")
    require_tool("protoc")
    require_tool("grpc_python_plugin", "/usr/bin/grpc_python_plugin")
    subprocess.run([os.path.join(ROOT, "examples", "python", "gen_stubs.sh"),
                    workdir], check=True, timeout=60)
    sys.path.insert(0, workdir)
    from kvsession.v1 import kvsession_pb2, kvsession_pb2_grpc
    return kvsession_pb2, kvsession_pb2_grpc


def server_argv(server, model, port, metrics_port=0, extra=()):
    return [server, f"--model={model}", f"--port={port}",
            f"--metrics_port={metrics_port}", "--host=127.0.0.1",
            "--threads=1", "--log_turns=false", *extra]


class Api:
    """A gRPC client of one address (a server or the proxy)."""

    def __init__(self, pb, pb_grpc, address):
        import grpc
        self.grpc = grpc
        self.pb = pb
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.KvSessionStub(self.channel)

    def close(self):
        self.channel.close()

    def wait_ready(self, timeout=60, proc=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.returncode}")
            try:
                return self.stub.GetServerInfo(self.pb.GetServerInfoRequest(),
                                               timeout=1)
            except self.grpc.RpcError:
                time.sleep(0.05)
        raise TimeoutError("server did not become ready")

    def chat(self, session_id, messages, mode, max_tokens=8, ignore_eos=False,
             use_cache=None, route=True, timeout=60):
        """One turn; returns (text, token ids, summary). Raises RpcError.

        route: send the session id as x-session-id metadata, as clients
        behind the affinity proxy must.
        """
        pb = self.pb
        req = pb.ChatRequest(session_id=session_id, mode=mode,
                             max_tokens=max_tokens, ignore_eos=ignore_eos)
        if use_cache is not None:
            req.use_cache = use_cache
        for role, content in messages:
            req.messages.add(role=role, content=content)
        metadata = [("x-session-id", session_id)] if route else None
        text, ids, summary = [], [], None
        for ev in self.stub.Chat(req, metadata=metadata, timeout=timeout):
            if ev.HasField("delta"):
                text.append(ev.delta.text)
                ids.extend(ev.delta.token_ids)
            elif ev.HasField("summary"):
                summary = ev.summary
        if summary is None:
            raise RuntimeError(f"turn of {session_id} ended without a summary")
        return "".join(text), ids, summary

    def device_used_bytes(self):
        info = self.stub.GetServerInfo(self.pb.GetServerInfoRequest(),
                                       timeout=10)
        return next(t.used_bytes for t in info.tiers if t.tier == "device")

    def has_session(self, session_id):
        try:
            self.stub.GetSession(self.pb.GetSessionRequest(
                session_id=session_id), timeout=10)
            return True
        except self.grpc.RpcError as e:
            if e.code() == self.grpc.StatusCode.NOT_FOUND:
                return False
            raise


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def scrape_metric_families(metrics_port):
    """{metric name: set of label names} from a live /metrics scrape."""
    text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    families = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series = line.split(" ")[0]
        name, _, labels = series.partition("{")
        names = set()
        for part in labels.rstrip("}").split(","):
            if "=" in part:
                names.add(part.split("=", 1)[0])
        families.setdefault(name, set()).update(names)
    return families


def metric_value(metrics_port, series):
    """The value of one series (name with its labels as exposed) in a live
    /metrics scrape."""
    text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    raise KeyError(f"{series} is not exposed")


def prom_query(prom_port, expr):
    """The result vector of an instant query, [] when it has no samples."""
    url = (f"http://127.0.0.1:{prom_port}/api/v1/query?" +
           urllib.parse.urlencode({"query": expr}))
    body = json.loads(http_get(url))
    if body.get("status") != "success":
        raise RuntimeError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


def render_nginx_conf(listen_port, backends, workdir):
    """deploy/nginx/kvsession.conf.template with the given backends, inside
    a complete nginx.conf for an unprivileged nginx in workdir."""
    with open(os.path.join(ROOT, "deploy", "nginx",
                           "kvsession.conf.template")) as f:
        template = f.read()
    servers = "\n".join(
        f"    server {b} max_fails=1 fail_timeout=10s;" for b in backends)
    site = (template.replace("${KVSESSION_LISTEN}", f"127.0.0.1:{listen_port}")
            .replace("${KVSESSION_BACKENDS}", servers.strip()))
    conf = f"""worker_processes 1;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/client_body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
{site}
}}
"""
    path = os.path.join(workdir, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def nginx_argv(nginx, workdir, conf):
    return [nginx, "-p", workdir, "-c", conf, "-g",
            f"daemon off; pid {workdir}/nginx.pid; error_log stderr;"]


def wait_port(port, timeout=20, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_port_closed(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.01)
    raise TimeoutError(f"port {port} still accepts connections")


def main(body):
    """Runs body(args, workdir) in a temp dir and maps the outcome to the
    exit status."""
    args = parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kvsession-deploy-") as workdir:
        try:
            body(args, workdir)
        except SystemExit:
            raise
        except BaseException:
            import traceback
            traceback.print_exc()
            log(f"FAILED after {time.monotonic() - start:.1f} s")
            sys.exit(1)
    log(f"PASSED in {time.monotonic() - start:.1f} s")
    sys.exit(0)
