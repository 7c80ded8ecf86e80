#!/usr/bin/env python3
"""CPU profile of a gateway under `wrangler dev`, through its inspector (V8 sampling profiler).

    BENCH_PROFILE=foyer:9229 scripts/bench --only=fanout &   # or baseline:9229
    python3 bench/profile.py 9229 8 target/fanout.cpuprofile
    python3 bench/profile.py report target/fanout.cpuprofile --from=MS --to=MS

Waits for the inspector, samples for SECONDS, writes the profile (Chrome DevTools can open it)
and prints the functions with the most self and inclusive time (idle excluded). Wasm
functions keep their Rust names. `--from=MS --to=MS` (unix ms, from the bench's `[phase]`
lines under BENCH_PROFILE) report only the samples of that span. This is how the fan-out and connect costs in the README were
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
    started_ms = time.time() * 1000
    time.sleep(seconds)
    profile = call("Profiler.stop")["result"]["profile"]
    profile["wallStartMs"] = started_ms  # the profile's own clock is monotonic, not wall
    # The bundle's source as the runtime ran it (wrangler re-bundles it on each start), so a
    # report can show the line behind an anonymous or minified function.
    call("Debugger.enable")
    sources = {}
    for node in profile["nodes"]:
        frame = node["callFrame"]
        if frame["url"].endswith(".js") and frame["scriptId"] not in sources:
            reply = call("Debugger.getScriptSource", scriptId=frame["scriptId"])
            sources[frame["scriptId"]] = reply.get("result", {}).get("scriptSource", "")
    profile["sources"] = sources
    return profile


def sample_times(profile):
    """Each sample's wall time (ms), from the profile's start and the sample deltas."""
    t, times = profile["startTime"], []
    for delta in profile["timeDeltas"]:
        t += delta
        times.append(profile["wallStartMs"] + (t - profile["startTime"]) / 1000)
    return times


def report(profile, top=30, span=(0, float("inf"))):
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", [])}

    sources = {k: v.split("\n") for k, v in profile.get("sources", {}).items()}

    def name(i):
        frame = nodes[i]["callFrame"]
        label = f"{frame['functionName'] or '(anonymous)'} {frame['url'].split('/')[-1]}:{frame['lineNumber']}"
        lines = sources.get(frame["scriptId"], [])
        if 0 <= frame["lineNumber"] < len(lines):  # what the line says, when the source was saved
            label += "  | " + lines[frame["lineNumber"]].strip()[:60]
        return label[:160]

    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for sample, at in zip(profile["samples"], sample_times(profile)):
        if not span[0] <= at < span[1] or name(sample).startswith("(idle)"):
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
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    if args[0] == "report":  # profile.py report FILE [--from=MS --to=MS]: an earlier profile
        with open(args[1]) as f:
            profile = json.load(f)
    else:
        port, seconds, out = args[0], float(args[1]), args[2]
        profile = record(port, seconds)
        with open(out, "w") as f:
            json.dump(profile, f)
    report(profile, span=(float(flags.get("from", 0)), float(flags.get("to", "inf"))))
