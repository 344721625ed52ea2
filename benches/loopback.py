#!/usr/bin/env python3
"""Loopback benchmark: loadtest's engine beside wrk, oha, a bare glommio
loop and a bare io_uring loop, against the built-in mock and (when installed) nginx serving a canned
OpenAI response.

Generator pinned to CPU 0, upstream pinned to CPU 1. Each tool runs in turn
within a round (order rotated every round), so all tools sample the same
machine conditions. Reported per run: requests/s, latency p50/p99, and
requests per generator CPU-second (from the generator process's rusage),
plus the upstream's CPU per request (from /proc). Medians over rounds.

With `--shape stream` the request asks for a stream and every upstream
answers with the same 128-token SSE reply (132 events; nginx serves the
mock's reply verbatim): wrk only reads the bytes, loadtest parses every
event, and the table adds SSE events per generator CPU-second.

Usage: python3 benches/loopback.py [--seconds 10] [--rounds 2] [--shape nonstream|stream]
       [--conns 64,1000] [--tools wrk,oha,bare-glommio,bare-uring,loadtest,loadtest-epoll,loadtest-bust]
       [--upstreams mock,nginx] [--mock-io uring|epoll] [--no-build] [--markdown out.md]
"""

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.path.join(ROOT, "benches", "perf-128-nonstream.json")
STREAM_PROFILE = os.path.join(ROOT, "benches", "perf-128-stream.json")
GEN_CPU = "0"
UP_CPU = "1"
MOCK_PORT = 18080
NGINX_PORT = 18081


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build():
    sh(["cargo", "build", "--release", "--benches", "--bins"], cwd=ROOT)


def bench_binary(name):
    deps = os.path.join(ROOT, "target", "release", "deps")
    candidates = [os.path.join(deps, f) for f in os.listdir(deps)
                  if f.startswith(name + "-") and not f.endswith(".d")]
    return max(candidates, key=os.path.getmtime)


def request_body(path=PROFILE):
    profile = json.load(open(path))
    d = profile["defaults"]
    body = {"model": d["model"], "messages": [{"role": "user", "content": d["content"]["prompts"][0]}],
            "max_tokens": d["max_tokens"], "stream": d["stream"]}
    if d["stream"]:
        # As loadtest asks, so the canned reply carries the usage event too.
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":"))


def proc_cpu_s(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return 0.0


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, ok=(0,)):
    """Runs cmd; returns (stdout, generator CPU seconds). Exit codes other
    than those in `ok` raise."""
    before = children_cpu()
    p = subprocess.run(cmd, capture_output=True, text=True)
    cpu = children_cpu() - before
    if p.returncode not in ok:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p.stdout, cpu


def ms(text):
    text = text.strip()
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def run_wrk(url, conns, seconds, lua, extra=()):
    """wrk -t1 on GEN_CPU; `extra` flags go before the script (e.g. a
    header). `errors` counts wrk's socket errors."""
    out, cpu = timed(["taskset", "-c", GEN_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
                      "--latency", *extra, "-s", lua, url])
    rps = float(out.split("Requests/sec:")[1].split()[0])
    total = int(out.split(" requests in ")[0].split()[-1])
    lat = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            lat[parts[0]] = ms(parts[1])
    errors = 0
    for line in out.splitlines():
        if "Socket errors" in line:
            errors = sum(int(x.split()[-1]) for x in line.split(":", 1)[1].split(","))
    return dict(rps=rps, requests=total, p50=lat.get("50%"), p99=lat.get("99%"), cpu=cpu, errors=errors)


def run_oha(url, conns, seconds, body_path):
    out, cpu = timed(["taskset", "-c", GEN_CPU, shutil.which("oha") or "/opt/oha/bin/oha",
                      "-z", f"{seconds}s", "-c", str(conns), "--no-tui", "--output-format", "json",
                      "-m", "POST", "-H", "Content-Type: application/json", "-D", body_path, url])
    j = json.loads(out)
    total = sum(j.get("statusCodeDistribution", {}).values())
    p = j.get("latencyPercentiles", {})
    return dict(rps=j["summary"]["requestsPerSec"], requests=total,
                p50=p.get("p50", 0) * 1000, p99=p.get("p99", 0) * 1000, cpu=cpu)


def run_bare(url, conns, seconds, binary="bare_loop"):
    out, cpu = timed(["taskset", "-c", GEN_CPU, bench_binary(binary), "--config", PROFILE,
                      "--target", url, "--conns", str(conns), "--seconds", str(seconds), "--cpu", GEN_CPU])
    j = json.loads(out.strip().splitlines()[-1])
    return dict(rps=j["rps"], requests=j["requests"], p50=j["p50_ms"], p99=j["p99_ms"], cpu=cpu)


def first_stage(summary_path):
    """The first stage of a summary as flat figures, from schema 2 (the
    typed model: figures under `total.metrics`, rates under `total.rates`)
    or schema 1 (an older build, for `--against`)."""
    summary = json.load(open(summary_path))
    stage = summary["stages"][0]
    if summary.get("schema", 1) == 1:
        return stage
    m = dict(stage["total"]["metrics"])
    m["rps"] = stage["total"]["rates"]["rps"]
    m["open_loop"] = stage.get("open_loop")
    m["connects"] = m.get("connects", 0)
    return m


def run_loadtest(url, conns, seconds, outdir, profile=PROFILE, binary=None, extra=()):
    out, cpu = timed(["taskset", "-c", GEN_CPU, binary or os.path.join(ROOT, "target", "release", "loadtest"),
                      "run", "--config", profile, "--target", url, "--cpus", GEN_CPU,
                      "--stages", f"{conns}:{seconds}s", "--warmup", "1s", "--out", outdir, *extra])
    path = out.split("summary: ")[1].split()[0]
    stage = first_stage(path)
    errors = stage["errors"]
    if errors:
        raise RuntimeError(f"loadtest saw errors: {errors}")
    return dict(rps=stage["rps"], requests=stage["requests"] + stage["warmup_requests"],
                p50=stage["latency_ms"]["p50"], p99=stage["latency_ms"]["p99"], cpu=cpu,
                events_per_request=stage.get("sse_events", 0) / max(stage["requests"], 1))


def loadtest_binary():
    return os.path.join(ROOT, "target", "release", "loadtest")


def open_loop_cmd(url, rate, seconds, warmup, outdir, binary=None):
    """`loadtest run` of one open-loop stage on GEN_CPU (warm-up included in
    the stage), writing its files to `outdir`."""
    return ["taskset", "-c", GEN_CPU, binary or loadtest_binary(), "run", "--config", PROFILE, "--target", url,
            "--cpus", GEN_CPU, "--stages", f"@{rate}:{seconds + warmup}s", "--warmup", f"{warmup}s",
            "--out", outdir, "--quiet"]


def start_mock(port, wrap=(), io=None):
    """The built-in mock on UP_CPU (128-token answers); `wrap` goes in front
    of the command (e.g. `chrt -f 10`); `io` picks its reactor."""
    return subprocess.Popen(list(wrap) + ["taskset", "-c", UP_CPU, loadtest_binary(), "mock", "--listen",
                                          f"127.0.0.1:{port}", "--cpus", UP_CPU, "--tokens", "128"]
                            + (["--io", io] if io else []),
                            stdout=subprocess.DEVNULL)


def wait_port(port, deadline=10.0, tls=None):
    """Waits until GET /health answers; `tls`: an ssl context to speak
    HTTPS with."""
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = (http.client.HTTPSConnection("127.0.0.1", port, timeout=1, context=tls) if tls
                 else http.client.HTTPConnection("127.0.0.1", port, timeout=1))
            c.request("GET", "/health")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


def canned_response(body):
    c = http.client.HTTPConnection("127.0.0.1", MOCK_PORT, timeout=5)
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    return c.getresponse().read().decode()


def start_nginx(tmp, canned, content_type="application/json"):
    """nginx answering every POST with `canned`: from `return` when it fits
    in one nginx parameter (4 KiB), else from a file (the SSE reply), which
    a POST may read only through the 405 handler's redirect."""
    if not shutil.which("nginx"):
        return None
    conf = os.path.join(tmp, "nginx.conf")
    if len(canned) < 4000:
        canned = canned.replace("'", "\\'")
        answer = f"return 200 '{canned}';"
    else:
        open(os.path.join(tmp, "reply"), "w").write(canned)
        # nginx's worker reads it as an unprivileged user.
        os.chmod(tmp, 0o755)
        os.chmod(os.path.join(tmp, "reply"), 0o644)
        answer = (f"root {tmp}; open_file_cache max=16; error_page 405 =200 $uri; "
                  "rewrite ^ /reply break;")
    open(conf, "w").write(f"""
worker_processes 1;
worker_cpu_affinity {'1' + '0' * int(UP_CPU)};
daemon off;
error_log {tmp}/error.log;
pid {tmp}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  server {{
    listen 127.0.0.1:{NGINX_PORT} backlog=4096;
    location = /health {{ return 200 'ok'; }}
    location / {{ default_type {content_type}; {answer} }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(NGINX_PORT)
    # The worker is the child of the master.
    time.sleep(0.3)
    kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
    return p, int(kids[0]) if kids else p.pid


def table_lines(results, events):
    """The markdown table: medians per (upstream, connections, tool); with
    `events` (SSE events per reply) a column of events per CPU-second."""
    head = "| upstream | conns | generator | req/s | p50 ms | p99 ms | req per gen CPU-s | vs wrk |"
    head += " events per gen CPU-s |" if events else ""
    lines = [head + " upstream CPU µs/req |", "|---" * (head.count("|") - 1 + 1) + "|"]
    for (up_name, conns, name), runs in results.items():
        med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
        eff = med(lambda r: r["requests"] / r["cpu"])
        wrk_runs = results.get((up_name, conns, "wrk"))
        wrk_eff = statistics.median(r["requests"] / r["cpu"] for r in wrk_runs) if wrk_runs else None
        up = med(lambda r: 1e6 * r["up_cpu"] / max(r["requests"], 1))
        row = (f"| {up_name} | {conns} | {name} | {med(lambda r: r['rps']):,.0f} | {med(lambda r: r['p50']):.2f} | "
               f"{med(lambda r: r['p99']):.2f} | {eff:,.0f} | " + (f"{eff / wrk_eff:.2f}× |" if wrk_eff else "- |"))
        if events:
            row += f" {eff * events / 1e6:.2f} M |"
        lines.append(row + f" {up:.1f} |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", default="64,1000")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--markdown")
    ap.add_argument("--shape", choices=["nonstream", "stream"], default="nonstream",
                    help="the 128-token reply as one JSON body or as an SSE stream")
    ap.add_argument("--tools", default="wrk,oha,bare-glommio,bare-uring,loadtest,loadtest-epoll,loadtest-bust", help="subset, comma-separated")
    ap.add_argument("--upstreams", default="mock,nginx", help="subset, comma-separated")
    ap.add_argument("--mock-io", choices=["uring", "epoll"], help="the mock's reactor (default: its default)")
    ap.add_argument("--against", metavar="BINARY",
                    help="a second loadtest build, run in the same rounds as `loadtest-against`")
    args = ap.parse_args()
    if not args.no_build:
        build()
    tmp = tempfile.mkdtemp(prefix="loadtest-bench-")
    stream = args.shape == "stream"
    profile = STREAM_PROFILE if stream else PROFILE
    body = request_body(profile)
    body_path = os.path.join(tmp, "body.json")
    open(body_path, "w").write(body)
    lua = os.path.join(tmp, "post.lua")
    open(lua, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         f"wrk.body = [[{body}]]\n")
    mock = start_mock(MOCK_PORT, io=args.mock_io)
    nginx = None
    try:
        wait_port(MOCK_PORT)
        canned = canned_response(body)
        # SSE events in the reply, for the events-per-CPU-second column.
        events = canned.count("\ndata:") + canned.startswith("data:") if stream else 0
        nginx = start_nginx(tmp, canned, "text/event-stream" if stream else "application/json")
        upstreams = [("mock", f"http://127.0.0.1:{MOCK_PORT}/v1/chat/completions", mock.pid)]
        if nginx:
            upstreams.append(("nginx", f"http://127.0.0.1:{NGINX_PORT}/v1/chat/completions", nginx[1]))
        tools = []
        if shutil.which("wrk"):
            tools.append(("wrk", lambda u, c: run_wrk(u, c, args.seconds, lua)))
        if shutil.which("oha") or os.path.exists("/opt/oha/bin/oha"):
            tools.append(("oha", lambda u, c: run_oha(u, c, args.seconds, body_path)))
        if not stream:
            # The bare loops read a head and a Content-Length body only.
            tools.append(("bare-glommio", lambda u, c: run_bare(u, c, args.seconds)))
            # One io_uring ring, SINGLE_ISSUER | DEFER_TASKRUN: the ceiling for
            # the engine's io_uring work (benches/bare_uring.rs).
            tools.append(("bare-uring", lambda u, c: run_bare(u, c, args.seconds, "bare_uring")))
        tools.append(("loadtest", lambda u, c: run_loadtest(u, c, args.seconds, tmp, profile)))
        # The same engine on the epoll reactor (`--io epoll`).
        tools.append(("loadtest-epoll", lambda u, c: run_loadtest(u, c, args.seconds, tmp, profile,
                                                                  extra=("--io", "epoll"))))
        # The same profile as users run it by default: cache_mode bust (a
        # fresh UUID in every prompt) and an x-request-id header, so each
        # request is a template copy plus two UUID patches.
        bust = json.load(open(profile))
        bust.pop("cache_mode", None)
        bust.pop("correlation", None)
        bust_path = os.path.join(tmp, "bust.json")
        json.dump(bust, open(bust_path, "w"))
        tools.append(("loadtest-bust", lambda u, c: run_loadtest(u, c, args.seconds, tmp, bust_path)))
        wanted = args.tools.split(",")
        if args.against:
            tools.append(("loadtest-against", lambda u, c: run_loadtest(u, c, args.seconds, tmp, profile,
                                                                        binary=args.against)))
            wanted.append("loadtest-against")
        tools = [t for t in tools if t[0] in wanted]
        upstreams = [u for u in upstreams if u[0] in args.upstreams.split(",")]
        results = {}
        for round_ in range(args.rounds):
            for up_name, url, up_pid in upstreams:
                for conns in [int(c) for c in args.conns.split(",")]:
                    order = tools[round_ % len(tools):] + tools[: round_ % len(tools)]
                    for name, fn in order:
                        up_before = proc_cpu_s(up_pid)
                        r = fn(url, conns)
                        r["up_cpu"] = proc_cpu_s(up_pid) - up_before
                        seen = r.get("events_per_request")
                        if stream and seen is not None and abs(seen - events) > 0.01:
                            raise RuntimeError(f"{name} saw {seen:.2f} events per reply, not {events}")
                        results.setdefault((up_name, conns, name), []).append(r)
                        print(f"round {round_ + 1} {up_name:5} c={conns:<5} {name:13} "
                              f"{r['rps']:>9.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                              f"{r['requests'] / r['cpu']:>9.0f} req/CPU-s  "
                              f"upstream {1e6 * r['up_cpu'] / max(r['requests'], 1):.1f} us/req", flush=True)
        lines = table_lines(results, events)
        table = "\n".join(lines)
        print(table)
        if args.markdown:
            open(args.markdown, "w").write(table + "\n")
    finally:
        mock.send_signal(signal.SIGTERM)
        if nginx:
            nginx[0].send_signal(signal.SIGQUIT)
            nginx[0].wait()
        mock.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
