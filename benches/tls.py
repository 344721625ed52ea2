#!/usr/bin/env python3
"""TLS benchmark: loadtest beside wrk (OpenSSL) against nginx serving TLS 1.3
(one worker) and against `loadtest mock --tls-cert`, the non-stream
128-token shape.

Generator pinned to CPU 0, upstream to CPU 1; the tools take turns inside
each round (order rotated per round), so they sample the same machine
conditions. Three modes:

  keep-alive   64 and 1000 connections: requests per generator CPU-second
  full         a new connection per request (Connection: close), sessions
               never resumed: handshakes per generator CPU-second
  resumed      a new connection per request, sessions resumed (tickets)

nginx logs `$ssl_session_reused` per request, so the table says how many
handshakes of each run really were resumed (wrk's included). loadtest
verifies the certificate (against the bench's CA, `--cacert`); wrk never
verifies.

Usage: python3 benches/tls.py [--seconds 8] [--rounds 2] [--no-build]
       [--modes keep-alive,full,resumed] [--upstreams nginx,mock] [--markdown out.md]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback as lb  # noqa: E402

NGINX_PORT = 18443
MOCK_PORT = 18444
# The same nginx with resumption off: every handshake is full, whatever
# the client offers.
NGINX_FULL_PORT = 18445


def make_certs(tmp):
    """A P-256 CA and a leaf for 127.0.0.1 / localhost it signed."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench CA", "-days", "2", "-out", "ca.pem")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.key.ec")
    ossl("pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key.ec", "-out", "leaf.key")
    ossl("req", "-new", "-key", "leaf.key", "-subj", "/CN=localhost", "-out", "leaf.csr")
    open(os.path.join(tmp, "leaf.ext"), "w").write(
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "leaf.ext", "-out", "leaf.pem")
    return {k: os.path.join(tmp, f) for k, f in
            (("ca", "ca.pem"), ("cert", "leaf.pem"), ("key", "leaf.key"))}


def start_nginx_tls(tmp, canned, certs):
    conf = os.path.join(tmp, "nginx-tls.conf")
    canned = canned.replace("'", "\\'")
    open(conf, "w").write(f"""
worker_processes 1;
worker_cpu_affinity {'1' + '0' * int(lb.UP_CPU)};
daemon off;
error_log {tmp}/error.log;
pid {tmp}/nginx-tls.pid;
events {{ worker_connections 8192; }}
http {{
  log_format reused '$ssl_session_reused';
  access_log {tmp}/reused.log reused buffer=256k flush=1s;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  ssl_protocols TLSv1.3;
  ssl_certificate {certs['cert']};
  ssl_certificate_key {certs['key']};
  ssl_session_tickets on;
  ssl_session_cache shared:SSL:20m;
  server {{
    listen 127.0.0.1:{NGINX_PORT} ssl backlog=4096;
    location = /health {{ return 200 'ok'; }}
    location / {{ default_type application/json; return 200 '{canned}'; }}
  }}
  server {{
    listen 127.0.0.1:{NGINX_FULL_PORT} ssl backlog=4096;
    ssl_session_tickets off;
    ssl_session_cache off;
    location / {{ default_type application/json; return 200 '{canned}'; }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_tls(NGINX_PORT, certs["ca"])
    time.sleep(0.3)
    kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
    return p, int(kids[0]) if kids else p.pid


def wait_tls(port, ca):
    import ssl
    lb.wait_port(port, tls=ssl.create_default_context(cafile=ca))


def reused_counts(tmp):
    """(resumed, full) handshakes nginx logged since the last call (one
    line per request; with Connection: close, one request per handshake)."""
    path = os.path.join(tmp, "reused.log")
    time.sleep(1.2)  # the log's flush interval
    try:
        lines = open(path).read().split()
    except OSError:
        return None
    open(path, "w").close()
    return lines.count("r"), lines.count(".")


def run_wrk(url, conns, seconds, lua, close):
    return lb.run_wrk(url, conns, seconds, lua, ["-H", "Connection: close"] if close else [])


def run_loadtest(url, conns, seconds, outdir, profile, ca, resume):
    extra = [] if resume else ["--no-tls-resume"]
    out, cpu = lb.timed(["taskset", "-c", lb.GEN_CPU, lb.loadtest_binary(), "run", "--config", profile,
                         "--target", url, "--cpus", lb.GEN_CPU, "--cacert", ca, *extra, "--no-jsonl",
                         "--stages", f"{conns}:{seconds}s", "--warmup", "1s", "--out", outdir, "--quiet"])
    path = out.split("summary: ")[1].split()[0]
    summary = json.load(open(path))
    m = summary["stages"][0]["total"]["metrics"]
    requests = m["requests"] + m["warmup_requests"]
    return dict(rps=summary["stages"][0]["total"]["rates"]["rps"], requests=requests, cpu=cpu,
                errors=sum(m["errors"].values()), handshakes=m["tls_handshakes"], resumed=m["tls_resumed"],
                tls_p50=m["tls_ms"]["p50"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--modes", default="keep-alive,full,resumed")
    ap.add_argument("--upstreams", default="nginx,mock")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    if not args.no_build:
        lb.build()
    tmp = tempfile.mkdtemp(prefix="loadtest-tls-bench-")
    certs = make_certs(tmp)
    body = lb.request_body()
    lua = os.path.join(tmp, "post.lua")
    open(lua, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         f"wrk.body = [[{body}]]\n")
    profile = json.load(open(lb.PROFILE))
    keep_path = os.path.join(tmp, "keep.json")
    json.dump(profile, open(keep_path, "w"))
    profile["disable_keepalive"] = True
    close_path = os.path.join(tmp, "close.json")
    json.dump(profile, open(close_path, "w"))
    # A plain mock makes nginx's canned answer; a TLS mock is an upstream.
    plain = lb.start_mock(lb.MOCK_PORT)
    mock = subprocess.Popen(["taskset", "-c", lb.UP_CPU, lb.loadtest_binary(), "mock", "--listen",
                             f"127.0.0.1:{MOCK_PORT}", "--cpus", lb.UP_CPU, "--tokens", "128",
                             "--tls-cert", certs["cert"], "--tls-key", certs["key"]],
                            stdout=subprocess.DEVNULL)
    nginx = None
    try:
        lb.wait_port(lb.MOCK_PORT)
        nginx = start_nginx_tls(tmp, lb.canned_response(body), certs)
        wait_tls(MOCK_PORT, certs["ca"])
        plain.send_signal(signal.SIGTERM)
        plain.wait()
        upstreams = [u for u in (("nginx", f"https://127.0.0.1:{NGINX_PORT}/v1/chat/completions", nginx[1]),
                                 ("mock", f"https://127.0.0.1:{MOCK_PORT}/v1/chat/completions", mock.pid))
                     if u[0] in args.upstreams.split(",")]
        modes = []
        for mode in args.modes.split(","):
            if mode == "keep-alive":
                modes += [("keep-alive", 64, False, True), ("keep-alive", 1000, False, True)]
            elif mode == "full":
                modes.append(("full", 64, True, False))
            elif mode == "resumed":
                modes.append(("resumed", 64, True, True))
        results = {}
        for round_ in range(args.rounds):
            for up_name, base_url, up_pid in upstreams:
                for mode, conns, close, resume in modes:
                    if mode == "full" and up_name != "nginx":
                        continue  # only nginx can refuse resumption for wrk too
                    url = base_url
                    if mode == "full":
                        url = f"https://127.0.0.1:{NGINX_FULL_PORT}/v1/chat/completions"
                    tools = [("wrk", lambda: run_wrk(url, conns, args.seconds, lua, close)),
                             ("loadtest", lambda: run_loadtest(url, conns, args.seconds, tmp,
                                                               close_path if close else keep_path,
                                                               certs["ca"], resume))]
                    order = tools[round_ % 2:] + tools[: round_ % 2]
                    for name, fn in order:
                        if up_name == "nginx":
                            reused_counts(tmp)
                        up_before = lb.proc_cpu_s(up_pid)
                        r = fn()
                        r["up_cpu"] = lb.proc_cpu_s(up_pid) - up_before
                        if up_name == "nginx":
                            r["nginx_reused"] = reused_counts(tmp)
                        results.setdefault((up_name, mode, conns, name), []).append(r)
                        print(f"round {round_ + 1} {up_name:5} {mode:10} c={conns:<5} {name:8} "
                              f"{r['rps']:>8.0f} req/s  {r['requests'] / r['cpu']:>8.0f} req/CPU-s  "
                              f"errors {r['errors']}  upstream {1e6 * r['up_cpu'] / max(r['requests'], 1):.1f} us/req"
                              f"  nginx resumed/full {r.get('nginx_reused')}"
                              f"  loadtest handshakes/resumed {r.get('handshakes')}/{r.get('resumed')}",
                              flush=True)
        lines = ["| upstream | mode | conns | generator | req/s | req per gen CPU-s | vs wrk | handshakes resumed | upstream CPU µs/req |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for (up_name, mode, conns, name), runs in results.items():
            eff = statistics.median(r["requests"] / r["cpu"] for r in runs)
            wrk_runs = results.get((up_name, mode, conns, "wrk"))
            wrk_eff = statistics.median(r["requests"] / r["cpu"] for r in wrk_runs)
            up = statistics.median(1e6 * r["up_cpu"] / max(r["requests"], 1) for r in runs)
            if mode == "keep-alive":
                resumed = "-"
            elif runs[0].get("nginx_reused"):
                r_, f_ = runs[-1]["nginx_reused"]
                resumed = f"{100 * r_ / max(r_ + f_, 1):.0f} % (nginx log)"
            elif "resumed" in runs[-1]:
                resumed = f"{100 * runs[-1]['resumed'] / max(runs[-1]['handshakes'], 1):.0f} % (loadtest)"
            else:
                resumed = "?"
            lines.append(f"| {up_name} | {mode} | {conns} | {name} | {statistics.median(r['rps'] for r in runs):,.0f} | "
                         f"{eff:,.0f} | {eff / wrk_eff:.2f}× | {resumed} | {up:.1f} |")
        table = "\n".join(lines)
        print(table)
        if args.markdown:
            open(args.markdown, "w").write(table + "\n")
    finally:
        for p in (mock, plain):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait()
        if nginx:
            nginx[0].send_signal(signal.SIGQUIT)
            nginx[0].wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
