#!/usr/bin/env python3
"""CPU profile of a gateway under `wrangler dev`, through its inspector (V8 sampling profiler).

    BENCH_PROFILE=foyer:9229 scripts/bench --only=fanout &   # or baseline:9229
    python3 bench/profile.py 9229 8 target/fanout.cpuprofile

Waits for the inspector, samples for SECONDS, writes the profile (Chrome DevTools can open it)
and prints the functions with the most self and inclusive time (idle excluded). Wasm
functions keep their Rust names. This is how the fan-out and connect costs in the README were
found.
"""
import collections
import json
import sys
import time
import urllib.request

from websockets.sync.client import connect


def record(port, seconds):
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read()
            break
        except OSError:
            time.sleep(0.3)
    # The inspector proxy insists on a local Origin.
    ws = connect(f"ws://127.0.0.1:{port}/ws", origin="http://localhost", max_size=None)
    counter = [0]

    def call(method, **params):
        counter[0] += 1
        ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("id") == counter[0]:
                return reply

    call("Profiler.enable")
    call("Profiler.setSamplingInterval", interval=200)
    call("Profiler.start")
    time.sleep(seconds)
    return call("Profiler.stop")["result"]["profile"]


def report(profile, top=30):
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", [])}

    def name(i):
        frame = nodes[i]["callFrame"]
        return f"{frame['functionName'] or '(anonymous)'} {frame['url'].split('/')[-1]}:{frame['lineNumber']}"[:140]

    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for sample in profile["samples"]:
        if name(sample).startswith("(idle)"):
            continue
        total += 1
        own[name(sample)] += 1
        seen, node = set(), sample
        while node in nodes:
            if name(node) not in seen:
                seen.add(name(node))
                inclusive[name(node)] += 1
            node = parent.get(node)
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"\n{title} time (% of {total} busy samples)")
        for key, count in counts.most_common(top):
            print(f"{100 * count / max(total, 1):5.1f}  {key}")


if __name__ == "__main__":
    port, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    profile = record(port, seconds)
    with open(out, "w") as f:
        json.dump(profile, f)
    report(profile)
