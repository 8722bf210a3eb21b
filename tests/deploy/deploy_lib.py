"""Shared helpers of the deployment tests: child processes that cannot
outlive the test, free loopback ports, the tiny model, Python gRPC stubs,
small HTTP and Prometheus clients, and bounded waits.

Every wait is bounded and says on failure what it waited for, with the log
tail of the child concerned. A watchdog reports what each thread waits for,
the stacks and the children's logs before CTest's TIMEOUT would kill the
test without a word.

Every test script exits 0 on success, 1 on failure and 77 (CTest's
SKIP_RETURN_CODE) only when a tool that scripts/setup.sh installs is
missing.
"""

import argparse
import contextlib
import faulthandler
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKIP = 77
# Where scripts/setup.sh installs the pinned PyPI tools (kubectl,
# kubernetes-validate) in a venv.
TOOLS_DIR = os.environ.get(
    "KVSESSION_TOOLS_DIR",
    os.path.join(os.path.expanduser("~"), ".cache", "kvsession", "deploy-tools"))
# Lock files of the ports that running deploy tests hold (see free_port).
PORT_LOCKS = os.path.join(tempfile.gettempdir(),
                          f"kvsession-deploy-ports-{os.getuid()}")
SETPRIV = shutil.which("setpriv")

_children = []    # every child spawned, for the watchdog
_waits = {}       # thread id -> (what it waits for, since when)
_port_locks = []  # held until the test exits
_workdirs = []    # for the watchdog to remove


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
    p.add_argument("--watchdog_s", type=float, default=165,
                   help="fail with a report after this long (below the "
                        "CTest TIMEOUT)")
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


@contextlib.contextmanager
def waiting(what):
    """Records what the calling thread waits for, for the watchdog."""
    key = threading.get_ident()
    outer = _waits.get(key)
    _waits[key] = (what, time.monotonic())
    try:
        yield
    finally:
        if outer is None:
            _waits.pop(key, None)
        else:
            _waits[key] = outer


def free_port():
    """A loopback port that no other deploy test holds, for a child to bind.

    Outside the ephemeral range, so that no outgoing connection (whose local
    port comes from that range) takes it before the child binds it; locked
    under PORT_LOCKS until this test exits, so that tests that run at once
    never pick the same one (two kvsession-servers would share it silently:
    gRPC binds with SO_REUSEPORT)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    ports = (range(low - 10000, low) if low > 11024
             else range(high + 1, 65536))
    os.makedirs(PORT_LOCKS, exist_ok=True)
    for _ in range(1000):
        port = random.choice(ports)
        lock = open(os.path.join(PORT_LOCKS, str(port)), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            lock.close()
            continue
        _port_locks.append(lock)
        return port
    raise RuntimeError(f"no free loopback port in {ports}")


def spawn(name, argv, logpath, env=None):
    """A child in its own process group (see kill_group), its output in
    logpath.

    No preexec_fn: it makes subprocess fork() instead of vfork(), and in a
    process with gRPC threads the forked child can deadlock in gRPC's
    pthread_atfork handler before it execs, which blocks Popen() forever.
    setpriv sets PR_SET_PDEATHSIG instead: the child is killed when the
    test dies, even when CTest kills it on timeout. (The signal follows the
    spawning thread: spawn from the main thread only.)"""
    if SETPRIV:
        argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    with open(logpath, "wb") as logfile:
        p = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
    p.name, p.logpath = name, logpath
    _children.append(p)
    return p


def tail(p, chars=3000):
    """The end of a child's log, for failure messages."""
    try:
        with open(p.logpath, "rb") as f:
            f.seek(max(0, os.path.getsize(p.logpath) - chars))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        text = f"(no log: {e})"
    return f"\n----- {p.name} (exit {p.poll()}), end of its log -----\n{text}"


def check_alive(p):
    if p.poll() is not None:
        raise RuntimeError(f"{p.name} exited with {p.returncode}" + tail(p))


def wait_exit(p, timeout, why="to exit"):
    """p's exit status, waiting at most timeout seconds."""
    with waiting(f"{p.name} {why}"):
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"timed out after {timeout} s waiting for "
                               f"{p.name} {why}" + tail(p)) from None


def kill_group(p):
    """Kills a child and everything it started (nginx workers survive their
    master otherwise). Not once the child is reaped: its pid, and so the
    group id, may then belong to someone else."""
    if p.returncode is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run(argv, timeout, env=None):
    """subprocess.run(capture_output=True, text=True) with the output in
    files: on a timeout the whole process group is killed, and no grandchild
    that keeps a pipe open can block the test (subprocess.run waits for the
    pipes' end without a bound after killing the child)."""
    what = " ".join(argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, env=env, start_new_session=True)
        timed_out = False
        try:
            with waiting(what):
                p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_group(p)  # on a timeout, or when the test fails meanwhile
            p.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if timed_out:
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}; "
                           f"its output ends:\n{(stdout + stderr)[-3000:]}")
    return subprocess.CompletedProcess(argv, p.returncode, stdout, stderr)


def run_checked(argv, timeout):
    r = run(argv, timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {r.returncode}:\n"
                           f"{r.stdout}{r.stderr}")
    return r


class Processes:
    """Child processes that are killed when the block ends, however."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type is not SystemExit:
            dump_logs(self.procs)
        for p in self.procs:
            kill_group(p)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{p.name} (pid {p.pid}) survived SIGKILL for 10 s")
        return False

    def start(self, name, argv, env=None):
        p = spawn(name, argv, os.path.join(self.workdir, f"{name}.log"), env)
        self.procs.append(p)
        return p


def dump_logs(procs):
    for p in procs:
        log(tail(p, 4000))


def write_tiny_model(writer, workdir):
    path = os.path.join(workdir, "tiny.gguf")
    run_checked([writer, path], timeout=60)
    return path


def load_stubs(workdir):
    """Generates the Python stubs of the API into workdir and imports them."""
    try:
        import grpc  # noqa: F401  (Debian's python3-grpcio)
    except ImportError:
        skip("python3-grpcio is not installed")
    require_tool("protoc")
    require_tool("grpc_python_plugin", "/usr/bin/grpc_python_plugin")
    run_checked([os.path.join(ROOT, "examples", "python", "gen_stubs.sh"),
                 workdir], timeout=60)
    sys.path.insert(0, workdir)
    from kvsession.v1 import kvsession_pb2, kvsession_pb2_grpc
    return kvsession_pb2, kvsession_pb2_grpc


def server_argv(server, model, port, metrics_port=0, extra=()):
    return [server, f"--model={model}", f"--port={port}",
            f"--metrics_port={metrics_port}", "--host=127.0.0.1",
            "--threads=1", "--log_turns=false", *extra]


class Api:
    """A gRPC client of one address (a server or the proxy). Every call has
    a deadline."""

    def __init__(self, pb, pb_grpc, address):
        import grpc
        self.grpc = grpc
        self.pb = pb
        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.KvSessionStub(self.channel)

    def close(self):
        self.channel.close()

    def wait_ready(self, timeout=60, proc=None):
        """GetServerInfo once the server (proc, when given) answers."""
        what = (f"{proc.name if proc else 'a server'} to answer "
                f"GetServerInfo at {self.address}")
        deadline = time.monotonic() + timeout
        last = None
        with waiting(what):
            while time.monotonic() < deadline:
                if proc is not None:
                    check_alive(proc)
                try:
                    return self.stub.GetServerInfo(
                        self.pb.GetServerInfoRequest(), timeout=2)
                except self.grpc.RpcError as e:
                    last = f"{e.code().name}: {e.details()}"
                    time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}; "
                           f"last error: {last}" + (tail(proc) if proc else ""))

    def chat(self, session_id, messages, mode, max_tokens=8, ignore_eos=False,
             use_cache=None, route=True, timeout=60):
        """One turn; returns (text, token ids, summary).

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
        what = f"the turn of {session_id} at {self.address}"
        start = time.monotonic()
        try:
            with waiting(what):
                for ev in self.stub.Chat(req, metadata=metadata,
                                         timeout=timeout):
                    if ev.HasField("delta"):
                        text.append(ev.delta.text)
                        ids.extend(ev.delta.token_ids)
                    elif ev.HasField("summary"):
                        summary = ev.summary
        except self.grpc.RpcError as e:
            raise RuntimeError(
                f"{what} failed after {time.monotonic() - start:.1f} s "
                f"(deadline {timeout} s): {e.code().name}: {e.details()}"
            ) from None
        if summary is None:
            raise RuntimeError(f"{what} ended without a summary")
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
    with waiting(f"GET {url}"), urllib.request.urlopen(
            url, timeout=timeout) as r:
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


def _accepts(port):
    # A timeout: a connect whose SYN is dropped (full backlog) would
    # otherwise block for the kernel's two minutes of retries.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_port(port, timeout=20, proc=None):
    what = f"{proc.name if proc else 'a listener'} to listen on port {port}"
    deadline = time.monotonic() + timeout
    with waiting(what):
        while time.monotonic() < deadline:
            if proc is not None:
                check_alive(proc)
            if _accepts(port):
                return
            time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}" +
                       (tail(proc) if proc else ""))


def wait_port_closed(port, timeout=10, proc=None):
    what = f"port {port} to refuse connections"
    deadline = time.monotonic() + timeout
    with waiting(what):
        while time.monotonic() < deadline:
            if not _accepts(port):
                return
            time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}" +
                       (tail(proc) if proc else ""))


def _stop_main(signum, frame):
    raise TimeoutError("stopped by the watchdog (see WATCHDOG above)")


def _watchdog(seconds, start):
    log(f"WATCHDOG: the test still runs after {seconds:.0f} s; stopping it "
        "before the CTest timeout kills it without a report")
    names = {t.ident: t.name for t in threading.enumerate()}
    now = time.monotonic()
    for ident, (what, since) in list(_waits.items()):
        log(f"  {names.get(ident, ident)} waits for {what} "
            f"(for {now - since:.1f} s)")
    sys.stderr.flush()
    faulthandler.dump_traceback(sys.stdout, all_threads=True)
    # An exception in the main thread, wherever it waits: the test's own
    # cleanup then dumps the children's logs and kills them.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
    time.sleep(5)
    log("WATCHDOG: the test did not stop; killing its children")
    dump_logs(_children)
    for p in _children:
        kill_group(p)
    for d in _workdirs:
        shutil.rmtree(d, ignore_errors=True)
    log(f"FAILED after {time.monotonic() - start:.1f} s (watchdog)")
    os._exit(1)


def main(body):
    """Runs body(args, workdir) in a temp dir under the watchdog and maps
    the outcome to the exit status."""
    args = parse_args()
    start = time.monotonic()
    signal.signal(signal.SIGUSR1, _stop_main)
    watchdog = threading.Timer(args.watchdog_s, _watchdog,
                               (args.watchdog_s, start))
    watchdog.daemon = True
    watchdog.start()
    # In case the watchdog thread cannot run (a C call that holds the GIL):
    # the stacks at least, and the children die with the test (setpriv).
    faulthandler.dump_traceback_later(args.watchdog_s + 10, exit=True)
    code = 1
    try:
        with tempfile.TemporaryDirectory(prefix="kvsession-deploy-") as workdir:
            _workdirs.append(workdir)
            body(args, workdir)
        code = 0
        log(f"PASSED in {time.monotonic() - start:.1f} s")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1  # a skip: 77
    except BaseException:
        traceback.print_exc()
        log(f"FAILED after {time.monotonic() - start:.1f} s")
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: the interpreter's exit joins leftover threads and shuts
    # gRPC down, which can block after a failure; the children are gone.
    os._exit(code)
