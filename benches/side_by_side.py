#!/usr/bin/env python3
"""loadtest and the epoll reference pacing at the same time, on the same
generator CPU, against the same mock: both see the same host.

`open_loop.py` runs the generators one after another, so a round's verdict
depends on what the host did in those particular seconds: on this VM the
whole machine slows down several times over for tens of milliseconds at a
time, and one such episode decides a 4-second run. Here loadtest and
`open_loop_ref` run together (each at `--rate`, sharing `GEN_CPU`), and the
late arrivals of each are laid on one wall-clock timeline: an episode that
both show came from the host; what differs between them in it (how late,
how long) is the generators' own.

Per round it prints, for each generator, over the seconds both measured, the
lag p99, the share of arrivals more than 1 ms late and the episodes (runs of 5 ms windows holding a late
arrival; see `lag_episodes.py`), then every episode of either next to the
other's overlapping one. The closing table sums the rounds.

With `--against BINARY` the other side is a second loadtest build instead of
the reference: an A/B test of two builds that the host cannot skew (the
same build on both sides came out within ~0.1 point of late share).

Usage (after `cargo build --release --benches`, or without --no-build):
  python3 benches/side_by_side.py [--rate 10000] [--rounds 4] [--seconds 4]
                                  [--warmup 1] [--against BINARY] [--no-build]
                                  [--markdown FILE]
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lag_episodes  # noqa: E402
import loopback  # noqa: E402

MOCK_PORT = 18084
LATE_US = lag_episodes.LATE_US
WINDOW_US = lag_episodes.WINDOW_US
TAIL_US = 50_000


def loadtest_arrivals(outdir):
    """(intended Unix µs, lag µs) of loadtest's measured arrivals."""
    rows = []
    for path in glob.glob(os.path.join(outdir, "results-*.jsonl")):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return [(r["intended_start_us"],
             r["start_us"] - r["intended_start_us"] - round((r["connect_ms"] or 0) * 1000))
            for r in rows if not r["warmup"] and r["intended_start_us"] is not None]


def reference_arrivals(trace, start_unix_us):
    with open(trace) as f:
        return [(start_unix_us + int(at), int(lag)) for at, lag in (line.split() for line in f if line.strip())]


def late_share(pairs):
    return 100.0 * sum(1 for _, lag in pairs if lag > LATE_US) / max(len(pairs), 1)


def start_loadtest(binary, url, rate, seconds, warmup, outdir):
    return subprocess.Popen(loopback.open_loop_cmd(url, rate, seconds, warmup, outdir, binary),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_loadtest(proc, binary):
    _, err = proc.communicate()
    # Exit 3 (the generator was the bottleneck) still wrote everything.
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{binary} exited {proc.returncode}: {err.strip()}")


def one_round(rate, seconds, warmup, tmp, against):
    """One round: (loadtest's pairs, the other side's pairs). The other side
    is the epoll reference, or a second loadtest binary (`against`)."""
    url = f"http://127.0.0.1:{MOCK_PORT}/v1/chat/completions"
    binary = loopback.loadtest_binary()
    outdir = tempfile.mkdtemp(prefix="lt-", dir=tmp)
    lt = start_loadtest(binary, url, rate, seconds, warmup, outdir)
    if against:
        other_dir = tempfile.mkdtemp(prefix="lt-b-", dir=tmp)
        other = start_loadtest(against, url, rate, seconds, warmup, other_dir)
        finish_loadtest(other, against)
        finish_loadtest(lt, binary)
        other_pairs = loadtest_arrivals(other_dir)
        shutil.rmtree(other_dir, ignore_errors=True)
    else:
        trace = os.path.join(tmp, "ref.trace")
        ref = subprocess.run(["taskset", "-c", loopback.GEN_CPU, loopback.bench_binary("open_loop_ref"),
                              "--config", loopback.PROFILE, "--target", url, "--rate", str(rate),
                              "--seconds", str(seconds), "--warmup", str(warmup), "--trace", trace],
                             capture_output=True, text=True)
        finish_loadtest(lt, binary)
        if ref.returncode != 0:
            raise RuntimeError(f"open_loop_ref exited {ref.returncode}: {ref.stderr.strip()}")
        other_pairs = reference_arrivals(trace, json.loads(ref.stdout)["start_unix_us"])
    lt_pairs = loadtest_arrivals(outdir)
    shutil.rmtree(outdir, ignore_errors=True)
    return dict(pairs=sorted(lt_pairs)), dict(pairs=sorted(other_pairs))


def matched(lt_eps, ref_eps):
    """Pairs of overlapping episodes (either side may be None), in time order."""
    rows = []
    used = set()
    for a in lt_eps:
        other = None
        for i, b in enumerate(ref_eps):
            if i not in used and b[0] <= a[1] and a[0] <= b[1]:
                other = b
                used.add(i)
                break
        rows.append((a, other))
    rows += [(None, b) for i, b in enumerate(ref_eps) if i not in used]
    return sorted(rows, key=lambda r: (r[0] or r[1])[0])


def describe(ep, t0):
    if ep is None:
        return "-"
    start, end, peak = ep
    return f"{(start * WINDOW_US - t0) / 1000:.0f} ms: {end - start + 1}x5 ms, peak {peak / 1000:.1f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=10000, help="arrivals/s for each generator")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--against", metavar="BINARY",
                    help="a second loadtest binary in place of the reference (an A/B test of two builds)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    if not args.no_build:
        loopback.build()
    tmp = tempfile.mkdtemp(prefix="loadtest-side-by-side-")
    mock = loopback.start_mock(MOCK_PORT)
    other = "B" if args.against else "reference"
    table = []
    try:
        loopback.wait_port(MOCK_PORT)
        for round_ in range(1, args.rounds + 1):
            lt, ref = one_round(args.rate, args.seconds, args.warmup, tmp, args.against)
            # Only the seconds both measured, less the last 50 ms: the
            # generator that finishes first writes its output on the CPU
            # the other is still pacing on.
            t0 = max(lt["pairs"][0][0], ref["pairs"][0][0])
            t1 = min(lt["pairs"][-1][0], ref["pairs"][-1][0]) - TAIL_US
            for side in (lt, ref):
                side["pairs"] = [p for p in side["pairs"] if t0 <= p[0] <= t1]
                lags = sorted(lag for _, lag in side["pairs"])
                side["p99"] = lags[int(0.99 * (len(lags) - 1))] / 1000 if lags else 0.0
            lt_eps = lag_episodes.episodes(lt["pairs"])
            ref_eps = lag_episodes.episodes(ref["pairs"])
            pairs = matched(lt_eps, ref_eps)
            both = sum(1 for a, b in pairs if a and b)
            row = dict(round=round_, lt_p99=lt["p99"], ref_p99=ref["p99"], lt_late=late_share(lt["pairs"]),
                       ref_late=late_share(ref["pairs"]), lt_eps=len(lt_eps), ref_eps=len(ref_eps), both=both,
                       lt_peak=max((e[2] for e in lt_eps), default=0) / 1000,
                       ref_peak=max((e[2] for e in ref_eps), default=0) / 1000)
            table.append(row)
            print(f"round {round_}: loadtest lag p99 {row['lt_p99']:.3f} ms, {row['lt_late']:.2f} % over 1 ms, "
                  f"{row['lt_eps']} episodes; {other} p99 {row['ref_p99']:.3f} ms, {row['ref_late']:.2f} %, "
                  f"{row['ref_eps']} episodes; {both} episodes in both", flush=True)
            for a, b in pairs:
                print(f"    loadtest {describe(a, t0):32} | {other} {describe(b, t0)}")
    finally:
        mock.terminate()
        mock.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [f"| round | loadtest lag p99 ms | {other} lag p99 ms | loadtest % over 1 ms | {other} % over 1 ms | "
             f"episodes loadtest / {other} / in both | worst peak loadtest / {other} ms |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['round']} | {r['lt_p99']:.3f} | {r['ref_p99']:.3f} | {r['lt_late']:.2f} | {r['ref_late']:.2f} | "
                     f"{r['lt_eps']} / {r['ref_eps']} / {r['both']} | {r['lt_peak']:.1f} / {r['ref_peak']:.1f} |")
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
