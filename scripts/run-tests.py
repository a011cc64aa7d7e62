#!/usr/bin/env python3
"""Runs every test binary of the workspace, several at a time, and prints each one's time.

`cargo test` runs test binaries one after another; most of Ferry's integration tests wait on
brokers (session timeouts, stalls, restarts) rather than compute, so running a few binaries at
once shortens the run without changing any test. Each binary runs in its package's directory,
as `cargo test` runs it, with its output kept and printed whole when it ends (failures last).

usage: scripts/run-tests.py [--jobs N] [--test-threads N] [--binaries-from FILE]

--binaries-from FILE: the JSON messages of a `cargo test --no-run --message-format=json…` that
already built the binaries (scripts/test builds first, then lints while the tests run, and a
second cargo here would wait for the lint's lock on the build directory).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# Longest first, so the pool ends together (measured per file in the serial run).
SLOW_FIRST = ["faults", "scale", "exactly_once", "mirror", "registry", "serve", "truncation", "checkpoints", "java_tools", "control", "truncation", "topics", "broker"]


def test_binaries(messages=None):
    if messages is not None:
        with open(messages) as f:
            out = f.read()
    else:
        out = subprocess.run(
            ["cargo", "test", "--workspace", "--all-targets", "--locked", "--no-run", "--message-format=json-render-diagnostics"],
            check=True, stdout=subprocess.PIPE, text=True,
        ).stdout
    found = []
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
            name = m["target"]["name"]
            kind = m["target"]["kind"][0]
            if kind == "bench":
                # Built to be linted and kept compiling (`--all-targets`); run by `cargo bench`.
                continue
            label = f"{m['package_id'].split('#')[0].rsplit('/', 1)[-1]}::{name}" if kind == "test" else f"{name} (unit)"
            found.append((label, name, m["executable"], os.path.dirname(m["manifest_path"])))
    rank = {n: i for i, n in enumerate(SLOW_FIRST)}
    found.sort(key=lambda b: rank.get(b[1], len(SLOW_FIRST)))
    return found


def run(binary, test_threads):
    label, _, exe, cwd = binary
    started = time.monotonic()
    # libtest's --report-time (each test's time, printed after its result) is unstable; the
    # RUSTC_BOOTSTRAP variable lets a stable-built test binary accept it.
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    cmd = [exe, "--test-threads", str(test_threads), "-Z", "unstable-options", "--report-time"]
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return label, p.returncode, time.monotonic() - started, p.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--test-threads", type=int, default=3)
    parser.add_argument("--binaries-from")
    args = parser.parse_args()
    build_started = time.monotonic()
    binaries = test_binaries(args.binaries_from)
    if not binaries:
        sys.exit("no test binaries found")
    print(f"test binaries built in {time.monotonic() - build_started:.0f} s", flush=True)
    tests_started = time.monotonic()
    print(f"running {len(binaries)} test binaries, {args.jobs} at a time, {args.test_threads} tests each", flush=True)
    results = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for label, code, took, output in pool.map(lambda b: run(b, args.test_threads), binaries):
            results.append((label, code, took, output))
    for label, code, took, output in sorted(results, key=lambda r: r[1] != 0):
        print(f"\n===== {label}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {took:.1f} s =====")
        print(output)
    print(f"\ntests: {time.monotonic() - tests_started:.0f} s wall; time per test binary:")
    for label, code, took, _ in sorted(results, key=lambda r: -r[2]):
        print(f"  {took:7.1f} s  {'ok    ' if code == 0 else 'FAILED'}  {label}")
    # The slowest tests, where shortening the run pays most ("test NAME ... ok <12.345s>").
    timed = []
    for label, _, _, output in results:
        for m in re.finditer(r"^test (\S+) \.\.\. (\w+) <([0-9.]+)s>", output, re.M):
            timed.append((float(m.group(3)), f"{label.split('::')[-1]}::{m.group(1)}", m.group(2)))
    print("\nslowest tests:")
    for took, name, result in sorted(timed, reverse=True)[:15]:
        print(f"  {took:7.1f} s  {result:6}  {name}")
    print(f"\ntest binaries built in {tests_started - build_started:.0f} s, run in {time.monotonic() - tests_started:.0f} s")
    failed = [r[0] for r in results if r[1] != 0]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
