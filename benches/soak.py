#!/usr/bin/env python3
"""Soak: one long run against the in-process mock, with the generator's
resident memory, open descriptors and threads sampled from /proc while it
runs. Passes when all three stay flat after the first minute (warm-up of
buffers and pools): RSS within 10 % (or 16 MiB) of its post-warm-up value,
descriptors within 5 %, threads constant. Not in CI (it takes the minutes
it is asked for).

Usage: python3 benches/soak.py [--minutes 10] [--every 10] [--users 64]
       [--profile profiles/realistic.json] [--tls] [--close] [--no-build]

--tls runs against the mock over TLS (`--mock-tls`); --close opens a new
connection per request (the profile with `disable_keepalive`), so every
request has a handshake and the session caches churn.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "loadtest")


def sample(pid):
    """(RSS MiB, open descriptors, threads) of a running process; None
    once it is exiting (a zombie has no memory or descriptors left)."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                return None
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def flat(samples, warm, fd_swing=0):
    """Why the samples after `warm` are not flat, or None. `fd_swing`:
    descriptors that may come and go (connections opened per request)."""
    late = [s for t, *s in samples if t >= warm]
    if len(late) < 2:
        return "too few samples after the warm-up"
    rss0, fds0, threads0 = late[0]
    reasons = []
    rss_max = max(s[0] for s in late)
    if rss_max - rss0 > max(0.10 * rss0, 16.0):
        reasons.append(f"RSS grew from {rss0:.1f} to {rss_max:.1f} MiB")
    fds = [s[1] for s in late]
    if max(fds) - min(fds) > max(0.05 * fds0, 4) + fd_swing:
        reasons.append(f"descriptors ranged {min(fds)}-{max(fds)}")
    if any(s[2] != threads0 for s in late):
        reasons.append(f"threads changed: {sorted({s[2] for s in late})}")
    return "; ".join(reasons) or None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--profile", default=os.path.join(ROOT, "profiles", "realistic.json"))
    parser.add_argument("--tls", action="store_true", help="the mock over TLS (--mock-tls)")
    parser.add_argument("--close", action="store_true", help="a new connection per request")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    out = tempfile.mkdtemp(prefix="loadtest-soak-")
    seconds = int(args.minutes * 60)
    profile = args.profile
    if args.close:
        import json
        text = json.load(open(profile))
        text["disable_keepalive"] = True
        profile = os.path.join(out, "profile.json")
        json.dump(text, open(profile, "w"))
    command = [BINARY, "run", "--config", profile, "--mock", *(["--mock-tls"] if args.tls else []),
               "--stages", f"{args.users}:{seconds}s", "--warmup", "0s",
               "--mock-ttft", "p50=20ms,p99=80ms", "--mock-itl", "1ms..3ms",
               "--quiet", "--out", out]
    print("$", " ".join(command), flush=True)
    started = time.time()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []
    print("  t s   RSS MiB   fds  threads", flush=True)
    while run.poll() is None:
        time.sleep(args.every)
        try:
            taken = sample(run.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        if taken is None or run.poll() is not None:
            break
        rss, fds, threads = taken
        t = time.time() - started
        samples.append((t, rss, fds, threads))
        print(f"{t:5.0f} {rss:9.1f} {fds:5d} {threads:8d}", flush=True)
    output = run.communicate()[0]
    shutil.rmtree(out, ignore_errors=True)
    print(output.strip())
    # With a connection per request, each user in flight holds two
    # descriptors (its socket and the in-process mock's end).
    why = flat(samples, warm=60.0, fd_swing=2 * args.users if args.close else 0)
    print(f"soak: {'FLAT' if why is None else 'NOT FLAT: ' + why} over {len(samples)} samples, exit {run.returncode}")
    sys.exit(0 if why is None and run.returncode == 0 else 1)


if __name__ == "__main__":
    main()
