#!/usr/bin/env python3
"""User-space instructions per request, counted by callgrind: a measure of
the engine's own work that the host's noise cannot move.

Timed comparisons on this VM swing by ±5-10 % a round, so a change worth
less than about half a microsecond per request cannot be told apart by
timing it. valgrind's callgrind counts the instructions the process
executes instead (the kernel's share, such as the TCP work behind `send`,
is not counted): the same build, inputs and rates give nearly the same
count whatever else the machine is doing.

Each build runs under callgrind against the built-in mock (CPU 1, not under
valgrind), pinned to CPU 0, twice per mode, and the per-request figure is
the difference of the two runs' totals over the difference of their request
counts, so start-up, the report and other fixed costs cancel:

- open loop: one stage of `--seconds` at each of two `--rates` (arrivals/s;
  valgrind runs the engine some 50 times slower, so the rates are low);
- closed loop: `--users` users for `--seconds` and for twice as long (with
  enough users to keep the shard busy: with 4, the count wandered by up
  to 25 % between runs, as the shard idled more or less while waiting).

At these rates the shard idles between arrivals, so each request also pays
for the wake-ups that a fast run shares among many; compare builds with
each other, not with timed runs. Needs `valgrind` (Debian's package), and
a build that falls back to `epoll_wait` where `epoll_pwait2` is refused, as
valgrind refuses it (DESIGN.md, Runtime).

With `--cache-sim` callgrind also models the L1 caches and the misses per
request are printed with each round (the table keeps to instructions).

Usage (after `cargo build --release`, or without --no-build):
  python3 benches/instructions.py [--against BINARY] [--rates 250,1250]
                                  [--users 32] [--seconds 4] [--rounds 2]
                                  [--cache-sim] [--no-build]
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

MOCK_PORT = 18085


def counted(binary, stages, tmp, cache_sim):
    """(requests, instructions, instruction-cache misses, data-cache misses)
    of one run of `binary` under callgrind; the misses are 0 without
    `cache_sim`."""
    out = tempfile.mkdtemp(dir=tmp)
    cmd = ["taskset", "-c", loopback.GEN_CPU, "valgrind", "--tool=callgrind",
           f"--cache-sim={'yes' if cache_sim else 'no'}",
           f"--callgrind-out-file={out}/callgrind.out", binary, "run", "--config", loopback.PROFILE,
           "--target", f"http://127.0.0.1:{MOCK_PORT}", "--cpus", loopback.GEN_CPU, "--stages", stages,
           "--out", out, "--quiet", "--no-jsonl"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    # Exit 3 (the generator was the bottleneck) still writes the summary;
    # under valgrind the open-loop lag is often over the bar.
    if run.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(cmd)} exited {run.returncode}: {run.stderr[-2000:]}")
    found = re.search(r"Collected : (\d+)", run.stderr)
    if not found:
        raise RuntimeError(f"no instruction count in callgrind's output: {run.stderr[-2000:]}")

    def misses(level):
        hit = re.search(level + r" +misses: +([\d,]+)", run.stderr)
        return int(hit.group(1).replace(",", "")) if hit else 0
    stage = loopback.first_stage(glob.glob(os.path.join(out, "summary-*.json"))[0])
    if stage["errors"]:
        raise RuntimeError(f"{stages}: the run saw errors: {stage['errors']}")
    requests = stage["requests"] + stage["warmup_requests"]
    return requests, int(found.group(1)), misses("I1"), misses("D1")


def per_request(low, high):
    """Each count's growth per added request, from the smaller run to the
    larger."""
    if high[0] <= low[0]:
        raise RuntimeError(f"the larger run did not send more requests ({low[0]}, {high[0]})")
    return [(b - a) / (high[0] - low[0]) for a, b in zip(low[1:], high[1:])]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", help="a second loadtest binary, measured in the same rounds")
    parser.add_argument("--rates", default="250,1250")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache-sim", action="store_true",
                        help="also count simulated L1 instruction and data cache misses (slower)")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("instructions.py: valgrind is not installed (apt-get install valgrind)")
    low, high = (int(r) for r in args.rates.split(","))
    if not args.no_build:
        loopback.build()
    builds = [("this build", loopback.loadtest_binary())]
    if args.against:
        builds.append(("against", os.path.abspath(args.against)))
    s = args.seconds
    modes = [
        (f"open @{low} vs @{high}/s", f"@{low}:{s}s", f"@{high}:{s}s"),
        (f"closed {args.users} users, {s} vs {2 * s} s", f"{args.users}:{s}s", f"{args.users}:{2 * s}s"),
    ]
    results = {}
    tmp = tempfile.mkdtemp(prefix="lt-instructions-")
    mock = loopback.start_mock(MOCK_PORT)
    try:
        loopback.wait_port(MOCK_PORT)
        for round_ in range(1, args.rounds + 1):
            for mode, small, large in modes:
                # Builds interleaved within each round, the order turned
                # every round.
                order = builds if round_ % 2 else builds[::-1]
                for name, binary in order:
                    value, i1, d1 = per_request(counted(binary, small, tmp, args.cache_sim),
                                                counted(binary, large, tmp, args.cache_sim))
                    results.setdefault((mode, name), []).append(value)
                    misses = f"  I1 misses {i1:6.1f}  D1 misses {d1:6.1f}" if args.cache_sim else ""
                    print(f"round {round_}  {mode:<28} {name:<10} {value:9.0f} instructions/request{misses}",
                          flush=True)
    finally:
        mock.terminate()
        mock.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    header = "| mode | " + " | ".join(f"{name} (runs)" for name, _ in builds)
    if args.against:
        header += " | this ÷ against"
    print(header + " |")
    print("|---" * (len(builds) + 1 + bool(args.against)) + "|")
    for mode, _, _ in modes:
        cells = []
        means = []
        for name, _ in builds:
            values = results[(mode, name)]
            means.append(sum(values) / len(values))
            cells.append(" / ".join(f"{v:,.0f}" for v in values))
        row = f"| {mode} | " + " | ".join(cells)
        if args.against:
            row += f" | {means[0] / means[1]:.3f}"
        print(row + " |")


if __name__ == "__main__":
    main()
