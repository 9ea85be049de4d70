#!/usr/bin/env python3
"""Judges `make bench` targets on the median of its rounds.

Usage: bench-medians.py ROUND_FILE...   (each file: one benchmark's output in one round)

A benchmark prints `TARGET` lines, tab-separated:
  TARGET, what, goal, measured (text), met (yes/**no**)[, value, op, limit, valid]
With the four numeric fields, the target is judged on the median value across rounds (met when
`median op limit` holds and every round was valid, e.g. no failed request); min and max are shown.
Without them (qualitative targets), it is met when every round met it. Prints one markdown row per
target, in the order first seen.
"""
import statistics
import sys

OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def short(x):
    """A value as a table shows it: 3 significant digits, thousands separated."""
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def main(paths):
    order, rounds = [], {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if fields[0] != "TARGET" or len(fields) < 5:
                    continue
                what = fields[1]
                if what not in rounds:
                    order.append(what)
                    rounds[what] = []
                rounds[what].append(fields)
    for what in order:
        runs = rounds[what]
        goal = runs[-1][2]
        numeric = [r for r in runs if len(r) >= 9]
        if numeric and len(numeric) == len(runs):
            try:
                values = [float(r[5]) for r in numeric]
            except ValueError:
                values = []
        else:
            values = []
        if values:
            op, limit = numeric[-1][6], float(numeric[-1][7])
            if op not in OPS:
                sys.exit(f"unknown comparison {op!r} in target {what!r}")
            median = statistics.median(values)
            valid = all(r[8] == "1" for r in numeric)
            met = OPS[op](median, limit) and valid
            spread = (
                f"median **{short(median)}** (min {short(min(values))}, max {short(max(values))};"
                f" {len(values)} rounds)"
            )
            if not valid:
                spread += "; a round failed its conditions"
            measured = f"{spread}; last round: {runs[-1][3]}"
        else:
            met = all(r[4].strip() in ("yes", "-") for r in runs)
            measured = f"{runs[-1][3]} ({len(runs)} rounds, {'all' if met else 'not all'} met)"
            if all(r[4].strip() == "-" for r in runs):
                print(f"| {what} | {goal} | {runs[-1][3]} | - |")
                continue
        print(f"| {what} | {goal} | {measured} | {'yes' if met else '**no**'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
