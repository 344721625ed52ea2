#!/usr/bin/env python3
"""Where an open-loop run's late arrivals came from: how many were more
than 1 ms late, and the episodes they fell in.

Reads either loadtest's per-turn JSONL (`results-*.jsonl`, warm-up turns
skipped) or a trace written by `open_loop_ref --trace FILE` (one line per
measured arrival: intended offset from the start and lag, in µs).

For loadtest a turn's lag is its start minus its intended time, less its
connect time when it opened a connection: for a turn on a pooled connection
that is exactly the lag the summary records; for a fresh connection it is
the start before the connect, to within a clock read.

An episode is a run of 5 ms windows (by intended time) each holding an
arrival more than 1 ms late. Printed as `start ms: windows x 5 ms, peak lag
ms`. A host stall shows as one short episode; a generator that cannot catch
up shows as long ones.

Usage: python3 benches/lag_episodes.py FILE...
"""

import json
import sys

WINDOW_US = 5_000
LATE_US = 1_000


def arrivals(path):
    """(intended offset µs, lag µs) of every measured arrival in `path`."""
    with open(path) as f:
        first = f.readline()
        f.seek(0)
        if first.startswith("{"):
            rows = [json.loads(line) for line in f if line.strip()]
            if not rows:
                return []
            t0 = min(r["intended_start_us"] for r in rows)
            return [(r["intended_start_us"] - t0,
                     r["start_us"] - r["intended_start_us"] - round((r["connect_ms"] or 0) * 1000))
                    for r in rows if not r["warmup"] and r["intended_start_us"] is not None]
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def episodes(pairs):
    worst = {}
    for at, lag in pairs:
        window = at // WINDOW_US
        worst[window] = max(worst.get(window, 0), lag)
    found = []
    for window in sorted(worst):
        if worst[window] <= LATE_US:
            continue
        if found and found[-1][1] == window - 1:
            found[-1][1] = window
            found[-1][2] = max(found[-1][2], worst[window])
        else:
            found.append([window, window, worst[window]])
    return found


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    for path in sys.argv[1:]:
        try:
            pairs = arrivals(path)
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"{path}: {e}")
        if not pairs:
            print(f"{path}: no measured arrivals")
            continue
        late = sum(1 for _, lag in pairs if lag > LATE_US)
        found = episodes(pairs)
        listed = " ".join(f"{a * WINDOW_US // 1000}:{b - a + 1}x5/{peak / 1000:.1f}" for a, b, peak in found)
        print(f"{path}: {late} of {len(pairs)} arrivals over 1 ms late ({100 * late / len(pairs):.2f} %), "
              f"{len(found)} episodes: {listed}")


if __name__ == "__main__":
    main()
