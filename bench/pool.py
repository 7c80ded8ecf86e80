#!/usr/bin/env python3
"""Pools the rounds of several `scripts/bench --paired-storm` logs.

    python3 bench/pool.py LOG [LOG ...]     # logs of one tree: a diagnostic's Foyer is another

With a snapshot side by side (BENCH_FOYER_B, bench/snapshot), `foyer / foyer-b` is the two
trees' ratio, round by round.

One paired run is the median of its rounds, and on this 2-core machine two runs of the same
tree differ by more than the budget's margin. Pooled, each gateway's ratio to the baseline is
the median over every round of every log (each round's own ratio: its gateways ran side by
side), with how many rounds read at or under 1.0, and a 90% interval for that median (a
bootstrap over the rounds, seeded: the same logs print the same interval).
"""
import collections
import random
import re
import statistics
import sys

ROUND = re.compile(r"round (\d+)/\d+: ([\w-]+) p50 ([\d.]+) p99 ([\d.]+) ms, CPU ([\d.]+)")


def interval(values, draws=2000):
    """The 5th and 95th percentiles of the median of `values` resampled with replacement."""
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[draws // 20], medians[draws - draws // 20 - 1]


def main(paths):
    ratios = collections.defaultdict(list)
    for path in paths:
        rounds = collections.defaultdict(dict)
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                m = ROUND.match(line)
                if m:
                    rounds[(int(m[1]))][m[2]] = tuple(float(m[i]) for i in (3, 4, 5))
        for gateways in rounds.values():
            base = gateways.get("baseline")
            for name, figures in gateways.items():
                if base and name != "baseline":
                    ratios[name].append(tuple(f / b for f, b in zip(figures, base)))
            # An A/B of two trees (BENCH_FOYER_B): the one over the other, round by round.
            if "foyer" in gateways and "foyer-b" in gateways:
                pair = zip(gateways["foyer"], gateways["foyer-b"])
                ratios["foyer / foyer-b"].append(tuple(a / b for a, b in pair))
    print(f"{len(paths)} logs; each gateway / the baseline, the median over all rounds")
    for name, rows in ratios.items():
        print(f"  {name} ({len(rows)} rounds)")
        for i, figure in enumerate(["welcome p50", "welcome p99", "CPU a connect"]):
            values = [r[i] for r in rows]
            low, high = interval(values)
            under = sum(v <= 1.0 for v in values)
            print(f"    {figure:<14} {statistics.median(values):.3f}  (90%: {low:.3f}-{high:.3f}; {under} rounds at or under 1.0)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
