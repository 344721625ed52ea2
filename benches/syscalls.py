#!/usr/bin/env python3
"""System calls per request: loadtest on each reactor, beside wrk.

Each generator runs against the built-in mock (pinned to CPU 1, 128-token
non-stream answers) under `perf stat` with the syscall tracepoints, pinned to
CPU 0: closed loop at 64 connections, and loadtest's open loop at a fixed
arrival rate. Counted: every system call of the generator process (all its
threads: shards, the stage coordinator, the kicker), and the ones that carry
the I/O (`io_uring_enter`, `epoll_pwait2`/`epoll_wait`, `sendto`/`sendmsg`,
`recvfrom`/`recvmsg`). JSONL is off, so the writer thread's writes are not in
the counts. Needs `perf` with access to tracepoints (root, or
perf_event_paranoid <= 1).

Usage: python3 benches/syscalls.py [--seconds 5] [--rate 20000] [--conns 64]
       [--no-build] [--markdown out.md]
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

EVENTS = {
    "all": "raw_syscalls:sys_enter",
    "io_uring_enter": "syscalls:sys_enter_io_uring_enter",
    "epoll_pwait2": "syscalls:sys_enter_epoll_pwait2",
    "epoll_wait": "syscalls:sys_enter_epoll_wait",
    "sendto": "syscalls:sys_enter_sendto",
    "sendmsg": "syscalls:sys_enter_sendmsg",
    "recvfrom": "syscalls:sys_enter_recvfrom",
    "recvmsg": "syscalls:sys_enter_recvmsg",
    "read": "syscalls:sys_enter_read",
    "write": "syscalls:sys_enter_write",
}


def perf_counts(cmd):
    """Runs cmd under perf stat; returns (stdout, {event name: count})."""
    out = tempfile.mktemp(prefix="perf-", suffix=".txt")
    events = ",".join(EVENTS.values())
    p = subprocess.run(["perf", "stat", "-x", ",", "-o", out, "-e", events, "--"] + cmd,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    counts = {}
    for line in open(out):
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[0].isdigit():
            for name, event in EVENTS.items():
                if fields[2] == event:
                    counts[name] = int(fields[0])
    os.unlink(out)
    return p.stdout, counts


def loadtest_requests(stdout):
    stage = loopback.first_stage(stdout.split("summary: ")[1].split()[0])
    if stage["errors"]:
        raise RuntimeError(f"loadtest saw errors: {stage['errors']}")
    return stage["requests"] + stage["warmup_requests"]


def run_loadtest(url, stages, io, outdir):
    cmd = ["taskset", "-c", loopback.GEN_CPU, loopback.loadtest_binary(), "run", "--config", loopback.PROFILE,
           "--target", url, "--cpus", loopback.GEN_CPU, "--stages", stages, "--warmup", "0s",
           "--out", outdir, "--no-jsonl", "--io", io]
    stdout, counts = perf_counts(cmd)
    return loadtest_requests(stdout), counts


def run_wrk(url, conns, seconds, lua):
    stdout, counts = perf_counts(["taskset", "-c", loopback.GEN_CPU, "wrk", "-t1", f"-c{conns}",
                                  f"-d{seconds}s", "-s", lua, url])
    requests = int(re.search(r"(\d+) requests in", stdout).group(1))
    return requests, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    if not args.no_build:
        loopback.build()
    tmp = tempfile.mkdtemp(prefix="loadtest-syscalls-")
    body = loopback.request_body()
    lua = os.path.join(tmp, "post.lua")
    open(lua, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         f"wrk.body = [[{body}]]\n")
    mock = loopback.start_mock(loopback.MOCK_PORT)
    url = f"http://127.0.0.1:{loopback.MOCK_PORT}/v1/chat/completions"
    rows = []
    try:
        loopback.wait_port(loopback.MOCK_PORT)
        runs = [(f"closed {args.conns}", "wrk", lambda: run_wrk(url, args.conns, args.seconds, lua))]
        for io in ("uring", "epoll"):
            runs.append((f"closed {args.conns}", f"loadtest --io {io}",
                         lambda io=io: run_loadtest(url, f"{args.conns}:{args.seconds}s", io, tmp)))
        for io in ("uring", "epoll"):
            runs.append((f"open {args.rate}/s", f"loadtest --io {io}",
                         lambda io=io: run_loadtest(url, f"@{args.rate}:{args.seconds}s", io, tmp)))
        for loop, tool, fn in runs:
            requests, counts = fn()
            per = {k: v / max(requests, 1) for k, v in counts.items()}
            rows.append((loop, tool, requests, per))
            print(f"{loop:12} {tool:20} {requests:>8} requests  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in per.items() if v > 0), flush=True)
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = ["| loop | generator | requests | all syscalls/req | io_uring_enter | epoll_pwait2 + epoll_wait "
             "| send* | recv* | read + write |", "|---|---|---|---|---|---|---|---|---|"]
    for loop, tool, requests, p in rows:
        lines.append(f"| {loop} | {tool} | {requests:,} | {p.get('all', 0):.3f} | {p.get('io_uring_enter', 0):.3f} | "
                     f"{p.get('epoll_pwait2', 0) + p.get('epoll_wait', 0):.3f} | "
                     f"{p.get('sendto', 0) + p.get('sendmsg', 0):.3f} | {p.get('recvfrom', 0) + p.get('recvmsg', 0):.3f} | "
                     f"{p.get('read', 0) + p.get('write', 0):.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        open(args.markdown, "w").write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
