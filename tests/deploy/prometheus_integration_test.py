"""Debian's Prometheus scrapes a kvsession-server on the tiny model every
second. After a multi-turn workload, Prometheus' own answers to the
dashboard's hit-rate query and to the device KV gauge must equal what the
turns' summaries and GetServerInfo report.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib as lib  # noqa: E402

SESSIONS = 5
TURNS = 4
HIT_RATE = ("sum(kvsession_cached_prompt_tokens_total) / "
            "sum(kvsession_prompt_tokens_total)")
DEVICE_KV = 'kvsession_kv_bytes{tier="device"}'


def write_prometheus_config(workdir, metrics_port):
    path = os.path.join(workdir, "prometheus.yml")
    with open(path, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kvsession
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
    return path


def body(args, workdir):
    prometheus = lib.require_tool("prometheus", "/usr/bin/prometheus")
    pb, pb_grpc = lib.load_stubs(workdir)
    model = lib.write_tiny_model(args.tiny_model_writer, workdir)
    with lib.Processes(workdir) as procs:
        port, metrics_port = lib.free_port(), lib.free_port()
        server = procs.start("server", lib.server_argv(
            args.server, model, port, metrics_port))
        api = lib.Api(pb, pb_grpc, f"127.0.0.1:{port}")
        api.wait_ready(proc=server)
        prom_port = lib.free_port()
        prom = procs.start("prometheus", [
            prometheus,
            f"--config.file={write_prometheus_config(workdir, metrics_port)}",
            f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn"])
        lib.wait_port(prom_port, timeout=30, proc=prom)

        # Sessions in both history modes, several turns each.
        prompt = cached = 0
        for i in range(SESSIONS):
            session = f"prom-{i}"
            history = []
            for t in range(TURNS):
                history.append(("user", f"turn {t} of session {i}"))
                if i % 2 == 0:
                    answer, _, s = api.chat(session, history,
                                            pb.HISTORY_MODE_FULL)
                    history.append(("assistant", answer))
                else:
                    _, _, s = api.chat(session, history[-1:],
                                       pb.HISTORY_MODE_APPEND)
                prompt += s.prompt_tokens
                cached += s.cached_tokens
        assert cached > 0, "the workload reused no cached tokens"
        want_rate = cached / prompt
        want_kv = api.device_used_bytes()
        assert want_kv > 0, "idle sessions should hold device KV"
        lib.log(f"workload: {prompt} prompt tokens, {cached} cached "
                f"({want_rate:.4f}), device KV {want_kv} bytes")

        # Poll until Prometheus has scraped the final state.
        deadline = time.monotonic() + 30
        got_rate = got_kv = None
        while time.monotonic() < deadline:
            lib.check_alive(prom)
            try:
                rate = lib.prom_query(prom_port, HIT_RATE)
                kv = lib.prom_query(prom_port, DEVICE_KV)
            except OSError:
                rate = kv = []
            if rate and kv:
                got_rate = float(rate[0]["value"][1])
                got_kv = float(kv[0]["value"][1])
                if abs(got_rate - want_rate) < 1e-12 and got_kv == want_kv:
                    break
            time.sleep(0.5)
        assert got_rate is not None, (
            "timed out after 30 s waiting for Prometheus to scrape kvsession "
            "samples" + lib.tail(prom))
        assert abs(got_rate - want_rate) < 1e-12, (got_rate, want_rate)
        assert got_kv == want_kv, (got_kv, want_kv)
        up = lib.prom_query(prom_port, 'up{job="kvsession"}')
        assert up and up[0]["value"][1] == "1", up
        # The prefilled + cached tokens account for every prompt token.
        split = lib.prom_query(
            prom_port, "sum(kvsession_prefilled_tokens_total) + "
            "sum(kvsession_cached_prompt_tokens_total)")
        assert float(split[0]["value"][1]) == prompt, split
        lib.log(f"Prometheus: hit rate {got_rate:.4f}, device KV {got_kv:.0f}")
        api.close()


if __name__ == "__main__":
    lib.main(body)
