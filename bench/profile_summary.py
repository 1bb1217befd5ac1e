"""Summarizes a py-spy raw (collapsed stacks) profile: share of samples per function, inclusive
and self, so BENCHMARKS.md can say where the time goes. Usage: profile_summary.py FILE [TOP]"""

from __future__ import annotations

import collections
import sys


def summarize(path: str, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as lines_in:
        raw = lines_in.read().splitlines()
    for line in raw:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "", "| function | inclusive | self |", "|---|---|---|"]
    for frame, n in inclusive.most_common(top):
        lines.append(f"| `{frame}` | {n / total:.0%} | {own[frame] / total:.0%} |")
    lines += ["", "Top self time:", "", "| function | self |", "|---|---|"]
    for frame, n in own.most_common(15):
        lines.append(f"| `{frame}` | {n / total:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25))
