#!/usr/bin/env python3
"""Times commands the way hyperfine does, but in rounds (A, B; then B, A; …) instead of all
of A's runs and then all of B's: on a VM whose speed drifts over minutes (sessions 14–16
measured the same binary at 24 and 35 ms within the hour), a drift during a row then moves
both sides of its ratio instead of one, and neither side always runs first.

    alternate.py --runs N [--warmup W] --export-json OUT \
        [--prepare SHELL-CMD] -n NAME CMD  [--prepare SHELL-CMD] -n NAME CMD …

Each CMD is split like a shell word list and run directly (no shell, so nothing is
subtracted), with stdin, stdout and stderr on /dev/null; its `--prepare` runs through `sh -c`
before each of its runs, untimed. A command that fails stops the script with its status.
OUT is hyperfine's JSON shape as far as bench/ reads it: results[i].command, .median,
.mean, .min, .max and .times (seconds), plus .cpu_times and .cpu_median: user + sys of the
command and its children (seconds), which moves less than wall time on a busy machine, and
.warmup_times: the untimed rounds' times, for scripts that report them on their own.
"""
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time


def parse(argv):
    runs, warmup, out, cmds = None, 0, None, []
    prepare = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--runs":
            runs, i = int(argv[i + 1]), i + 2
        elif a == "--warmup":
            warmup, i = int(argv[i + 1]), i + 2
        elif a == "--export-json":
            out, i = argv[i + 1], i + 2
        elif a == "--prepare":
            prepare, i = argv[i + 1], i + 2
        elif a == "-n":
            cmds.append({"name": argv[i + 1], "cmd": argv[i + 2], "prepare": prepare})
            prepare, i = None, i + 3
        else:
            sys.exit(f"alternate.py: unexpected argument {a!r}")
    if runs is None or out is None or not cmds:
        sys.exit("alternate.py: --runs, --export-json and at least one -n NAME CMD are required")
    return runs, warmup, out, cmds


def run(c, timed):
    if c["prepare"]:
        subprocess.run(["sh", "-c", c["prepare"]], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
    r0, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    p = subprocess.run(shlex.split(c["cmd"]), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took, r1 = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    if p.returncode != 0:
        sys.exit(f"alternate.py: {c['name']} ({c['cmd']}) exited with {p.returncode}")
    if timed:
        c.setdefault("times", []).append(took)
        c.setdefault("cpu_times", []).append(cpu)
    else:
        c.setdefault("warmup_times", []).append(took)


def main():
    runs, warmup, out, cmds = parse(sys.argv[1:])
    for i in range(warmup + runs):
        for c in cmds if i % 2 == 0 else cmds[::-1]:
            run(c, timed=i >= warmup)
    results = [{
        "command": c["name"],
        "median": statistics.median(c["times"]),
        "mean": statistics.mean(c["times"]),
        "min": min(c["times"]),
        "max": max(c["times"]),
        "times": c["times"],
        "cpu_times": c["cpu_times"],
        "cpu_median": statistics.median(c["cpu_times"]),
        "warmup_times": c.get("warmup_times", []),
    } for c in cmds]
    with open(out, "w") as f:
        json.dump({"results": results}, f, indent=1)


if __name__ == "__main__":
    main()
