"""Draining behind the affinity proxy: SIGTERM to the replica that runs a
long stream. The stream still completes with OK and every token (the
replica drains within --shutdown_grace_s), and requests that start after the
signal succeed on the other replicas, including sessions that hash to the
draining one.
"""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib as lib  # noqa: E402

REPLICAS = 3
LONG_TOKENS = 700  # several seconds without cache reuse on the tiny model
NEW_SESSIONS = 12
# The grace must outlast the stream: ~7 s in a Release build, but a
# sanitizer build runs it about ten times slower (measured 60.5 s; the
# ctest TIMEOUT of tests/deploy is 180 s).
GRACE_S = 120


def body(args, workdir):
    nginx = lib.require_tool("nginx", "/usr/sbin/nginx")
    pb, pb_grpc = lib.load_stubs(workdir)
    full = pb.HISTORY_MODE_FULL
    model = lib.write_tiny_model(args.tiny_model_writer, workdir)
    with lib.Processes(workdir) as procs:
        ports = [lib.free_port() for _ in range(REPLICAS)]
        mports = [lib.free_port() for _ in range(REPLICAS)]
        replicas = [procs.start(f"replica{i}", lib.server_argv(
            args.server, model, ports[i], mports[i],
            extra=[f"--shutdown_grace_s={GRACE_S}"])) for i in range(REPLICAS)]
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

        # The long stream, read on its own thread through the proxy.
        # use_cache=false recomputes the context for every token, which
        # makes the tiny model slow enough to signal mid-stream.
        long_id = "drain-long"
        req = pb.ChatRequest(session_id=long_id, mode=full,
                             max_tokens=LONG_TOKENS, ignore_eos=True,
                             use_cache=False)
        req.messages.add(role="user", content="tell a long story")
        started = threading.Event()
        outcome = {}

        def read_stream():
            try:
                tokens = 0
                stream = api.stub.Chat(req, timeout=GRACE_S + 60,
                                       metadata=[("x-session-id", long_id)])
                with lib.waiting("the long stream's tokens"):
                    for ev in stream:
                        if ev.HasField("delta"):
                            tokens += len(ev.delta.token_ids)
                            started.set()
                        elif ev.HasField("summary"):
                            outcome["summary"] = ev.summary
                outcome["tokens"] = tokens
                outcome["ok"] = True
            except Exception as e:  # reported by the main thread
                outcome["error"] = e
            finally:
                started.set()

        # A daemon: a failure below must not wait for the stream's deadline.
        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        with lib.waiting("the first token of the long stream"):
            assert started.wait(60), (
                "timed out after 60 s waiting for the first token of the "
                "long stream")
        assert "error" not in outcome, outcome.get("error")
        # A turn without cache keeps no session; the replica running it is
        # the one with a running sequence.
        holders = [i for i in range(REPLICAS) if lib.metric_value(
            mports[i], "kvsession_running_sequences") > 0]
        assert len(holders) == 1, f"long stream running on {holders}"
        victim = holders[0]
        replicas[victim].send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The replica closes its listener at once. A turn whose connection
        # was accepted just before that is reset and, its body already sent,
        # cannot be retried by nginx; in a cluster the preStop sleep keeps
        # traffic away from that moment (docs/operations.md).
        lib.wait_port_closed(ports[victim], timeout=10,
                             proc=replicas[victim])

        # New sessions after the signal, routed by the proxy; some hash to
        # the draining replica and must be re-routed.
        for i in range(NEW_SESSIONS):
            s = f"drain-new-{i:02d}"
            _, _, summary = api.chat(s, [("user", f"hello {i}")], full)
            assert summary.generated_tokens > 0
            # The draining replica takes no new connections: the session
            # lives on exactly one of the others.
            live = [j for j in range(REPLICAS)
                    if j != victim and direct[j].has_session(s)]
            assert len(live) == 1, f"{s} is on replicas {live}"
        new_done = time.monotonic() - signalled
        assert reader.is_alive() or "ok" in outcome, outcome
        lib.log(f"{NEW_SESSIONS} new sessions served {new_done:.1f} s "
                f"after SIGTERM; long stream still running: "
                f"{reader.is_alive()}")

        with lib.waiting("the long stream to finish"):
            reader.join(GRACE_S)
        assert not reader.is_alive(), (
            f"timed out after {GRACE_S} s waiting for the long stream to finish"
            + lib.tail(replicas[victim]))
        assert outcome.get("ok"), f"the long stream failed: {outcome}"
        summary = outcome["summary"]
        assert summary.generated_tokens == LONG_TOKENS, summary
        assert outcome["tokens"] == LONG_TOKENS
        assert summary.finish_reason == pb.FINISH_REASON_LENGTH, summary
        code = lib.wait_exit(replicas[victim], 30, "to exit after draining")
        assert code == 0, f"unclean exit {code}" + lib.tail(replicas[victim])
        lib.log(f"long stream completed {LONG_TOKENS} tokens "
                f"{time.monotonic() - signalled:.1f} s after SIGTERM")

        # And once the replica is gone, the proxy still serves everything.
        for i in range(NEW_SESSIONS):
            s = f"drain-after-{i:02d}"
            api.chat(s, [("user", f"hi {i}")], full)
        api.close()
        for d in direct:
            d.close()


if __name__ == "__main__":
    lib.main(body)
