"""Session affinity through nginx (deploy/nginx/kvsession.conf.template):
three kvsession-server replicas on the tiny model behind an unprivileged
nginx on loopback. Every follow-up turn lands on the replica that holds its
session's KV; when one replica stops, its sessions move to the others and
are recomputed from their full history, token-identical to a fresh request,
while the other sessions keep their caches.
"""

import concurrent.futures
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib as lib  # noqa: E402

SESSIONS = 30
TURNS = 4
REPLICAS = 3


def body(args, workdir):
    nginx = lib.require_tool("nginx", "/usr/sbin/nginx")
    pb, pb_grpc = lib.load_stubs(workdir)
    full = pb.HISTORY_MODE_FULL
    model = lib.write_tiny_model(args.tiny_model_writer, workdir)
    with lib.Processes(workdir) as procs:
        ports = [lib.free_port() for _ in range(REPLICAS)]
        replicas = [procs.start(f"replica{i}", lib.server_argv(
            args.server, model, port, extra=["--shutdown_grace_s=10"]))
            for i, port in enumerate(ports)]
        direct = [lib.Api(pb, pb_grpc, f"127.0.0.1:{p}") for p in ports]
        for api, proc in zip(direct, replicas):
            api.wait_ready(proc=proc)
        proxy_port = lib.free_port()
        conf = lib.render_nginx_conf(
            proxy_port, [f"127.0.0.1:{p}" for p in ports], workdir)
        proxy = procs.start("nginx", lib.nginx_argv(nginx, workdir, conf))
        lib.wait_port(proxy_port, proc=proxy)
        api = lib.Api(pb, pb_grpc, f"127.0.0.1:{proxy_port}")
        api.wait_ready(proc=proxy)

        sessions = [f"affinity-{i:02d}" for i in range(SESSIONS)]
        history = {s: [] for s in sessions}

        def turn(session, text):
            history[session].append(("user", text))
            answer, ids, summary = api.chat(session, history[session], full)
            history[session].append(("assistant", answer))
            return answer, ids, summary

        # Turns of different sessions run concurrently; turns of one
        # session one after another. Messages start with the reversed
        # session id (unique digits first), so that no two sessions share a
        # whole KV block and a moved session has nothing to reuse.
        def run_session(session):
            cached = []
            for t in range(TURNS):
                _, _, summary = turn(session,
                                     f"{session[::-1]} question {t}")
                cached.append(summary.cached_tokens)
            return cached

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = dict(zip(sessions, pool.map(run_session, sessions)))
        for s, cached in results.items():
            assert cached[0] == 0, f"{s}: first turn reused {cached[0]} tokens"
            assert all(c > 0 for c in cached[1:]), (
                f"{s}: a follow-up turn missed its replica's cache: {cached}")

        # Each session lives on exactly one replica.
        home = {}
        for s in sessions:
            holders = [i for i, d in enumerate(direct) if d.has_session(s)]
            assert len(holders) == 1, f"{s} is on replicas {holders}"
            home[s] = holders[0]
        counts = [list(home.values()).count(i) for i in range(REPLICAS)]
        lib.log(f"sessions per replica: {counts}")
        assert sum(1 for c in counts if c > 0) >= 2, (
            f"hashing did not spread sessions: {counts}")

        # Stop the replica with the most sessions.
        victim = max(range(REPLICAS), key=lambda i: counts[i])
        replicas[victim].send_signal(signal.SIGTERM)
        code = lib.wait_exit(replicas[victim], 30, "to exit after SIGTERM")
        assert code == 0, f"unclean exit {code}" + lib.tail(replicas[victim])
        moved = [s for s in sessions if home[s] == victim]

        for s in sessions:
            prior = list(history[s])
            last = f"{s[::-1]} after the stop"
            answer, ids, summary = turn(s, last)
            if s in moved:
                assert summary.cached_tokens == 0, (
                    f"{s}: moved session reused {summary.cached_tokens}")
                # The same full history computed from scratch (no cache at
                # all): identical answer.
                fresh_id = f"fresh-{s}"
                fresh_answer, fresh_ids, fresh_summary = api.chat(
                    fresh_id, prior + [("user", last)], full, use_cache=False)
                assert fresh_summary.cached_tokens == 0
                assert (fresh_ids, fresh_answer) == (ids, answer), (
                    f"{s}: recomputed answer differs from a fresh one")
            else:
                assert summary.cached_tokens > 0, (
                    f"{s}: session on a live replica lost its cache")
        lib.log(f"{len(moved)} sessions moved and recomputed, "
                f"{SESSIONS - len(moved)} kept their cache")
        api.close()
        for d in direct:
            d.close()


if __name__ == "__main__":
    lib.main(body)
