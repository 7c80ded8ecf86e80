#!/usr/bin/env python3
"""Pools the rounds of several `scripts/bench --paired-storm` logs.

    python3 bench/pool.py bench/runs/paired-storm-2026-12-04j*.log

One paired run is the median of its rounds, and on this 2-core machine two runs of the same
tree differ by more than the budget's margin. Pooled, each gateway's ratio to the baseline is
the median over every round of every log (each round's own ratio: its gateways ran side by
side), with how many rounds read at or under 1.0.
"""
import collections
import re
import statistics
import sys

ROUND = re.compile(r"round (\d+)/\d+: ([\w-]+) p50 ([\d.]+) p99 ([\d.]+) ms, CPU ([\d.]+)")


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
    print(f"{len(paths)} logs; each gateway / the baseline, the median over all rounds")
    for name, rows in ratios.items():
        p50, p99, cpu = (statistics.median(r[i] for r in rows) for i in range(3))
        under = [sum(r[i] <= 1.0 for r in rows) for i in range(2)]
        print(
            f"  {name:<11} {len(rows):>3} rounds: p50 {p50:.3f} ({under[0]} at or under 1.0), "
            f"p99 {p99:.3f} ({under[1]}), CPU a connect {cpu:.3f}"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
