#!/usr/bin/python3
"""The full preset spread over many machines, on paper: per-run times measured in a sweep folder
(its runs/*/result.json), dealt to N ranks the way `mpirun -np N smallbatch compare` deals them.

    /usr/bin/python3 tools/scripts/sweep_on_paper.py runs/full_bn_gn --overhead 0.5 --ranks 16,64,256
    /usr/bin/python3 tools/scripts/sweep_on_paper.py runs/full --sync runs/sync --ranks 4,16,64,256

Each run's time is the mean `seconds` (training and per-epoch validation) of the measured runs at
its batch size, plus --overhead seconds (opening the data, the evaluations after training). The
deal uses compare's own relative cost table (tools/app/compare.cpp, kRelativeRunCost) and its
greedy longest-first rule; the wall time is then the busiest rank's sum of *measured* times.
"""
import argparse
import glob
import json
import math
import os
import statistics

# tools/app/compare.cpp, kRelativeRunCost: time of a run relative to batch 8.
TABLE = [(1, 0.99), (2, 0.84), (4, 0.81), (8, 1.00), (16, 1.22), (32, 1.53)]


def relative_run_cost(batch):
    if batch <= TABLE[0][0]:
        return TABLE[0][1]
    if batch >= TABLE[-1][0]:
        return TABLE[-1][1]
    for (lo, clo), (hi, chi) in zip(TABLE, TABLE[1:]):
        if batch <= hi:
            t = math.log2(batch / lo) / math.log2(hi / lo)
            return clo + t * (chi - clo)


def assign_runs(costs, ranks):
    """compare's assign_runs: longest first (stable), each to the least loaded rank (lowest on ties)."""
    order = sorted(range(len(costs)), key=lambda i: -costs[i])
    load = [0.0] * ranks
    rank_of = [0] * len(costs)
    for i in order:
        least = min(range(ranks), key=lambda r: (load[r], r))
        rank_of[i] = least
        load[least] += costs[i]
    return rank_of


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="a compare --out folder with finished runs")
    ap.add_argument("--norms", type=int, default=11, help="norms in the plan (full preset: 11)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-sizes", default="32,16,8,4,2,1")
    ap.add_argument("--overhead", type=float, default=0.0, help="seconds per run outside result.json's seconds")
    ap.add_argument("--ranks", default="1,16,64,256")
    ap.add_argument("--sync", help="also a sweep of runs over several ranks each (--preset sync's folder): its "
                    "runs as measured, one K after another, each K's runs dealt to groups of K machines")
    a = ap.parse_args()
    per_batch = {}
    for f in glob.glob(os.path.join(a.sweep, "runs", "*", "result.json")):
        j = json.load(open(f))
        per_batch.setdefault(j["batch"], []).append(j["seconds"])
    batches = [int(b) for b in a.batch_sizes.split(",")]
    missing = [b for b in batches if b not in per_batch]
    if missing:
        raise SystemExit(f"no measured run at batch {missing} in {a.sweep}")
    seconds = {b: statistics.mean(per_batch[b]) + a.overhead for b in batches}
    print("measured seconds per run (mean of %s runs each):" % {b: len(per_batch[b]) for b in batches})
    print("  " + ", ".join(f"b{b}: {seconds[b]:.1f}" for b in batches))
    runs = [b for _ in range(a.seeds) for b in batches for _ in range(a.norms)]  # plan order
    costs = [relative_run_cost(b) for b in runs]
    total = sum(seconds[b] for b in runs)
    longest = max(seconds[b] for b in runs)
    print(f"{len(runs)} runs, {total / 60:.1f} min of run time in all; the longest run {longest:.1f} s")
    print("| machines | runs per machine | wall time | busiest / mean load | bound: max(total / N, longest run) |")
    print("|---|---|---|---|---|")
    for n in [int(r) for r in a.ranks.split(",")]:
        rank_of = assign_runs(costs, n)
        load = [0.0] * n
        count = [0] * n
        for i, b in enumerate(runs):
            load[rank_of[i]] += seconds[b]
            count[rank_of[i]] += 1
        wall = max(load)
        bound = max(total / n, longest)
        print(f"| {n} | {min(count)} - {max(count)} | {wall / 60:.2f} min ({wall:.0f} s) | "
              f"{wall / (total / n):.2f} | {bound:.0f} s |")
    if a.sync:
        sync_arms(a.sync, [int(r) for r in a.ranks.split(",")], a.overhead)


def sync_arms(folder, ranks_list, overhead):
    """The runs of a sweep over several K (compare --ranks-per-run 4,2): compare trains the K's one
    after another, largest first, each over groups of K consecutive ranks, dealt as above."""
    runs = []
    for f in glob.glob(os.path.join(folder, "runs", "*", "result.json")):
        j = json.load(open(f))
        runs.append((j.get("ranks", 1), j["batch"], j["seconds"] + overhead))
    if not runs:
        raise SystemExit(f"no finished run in {folder}")
    ks = sorted({k for k, _, _ in runs}, reverse=True)
    total = sum(s * k for k, _, s in runs)  # machine-seconds: a run occupies its K machines
    print(f"\n{len(runs)} runs over K = {', '.join(map(str, ks))} ranks each: {total / 60:.1f} machine-minutes; "
          f"the longest run {max(s for _, _, s in runs):.1f} s")
    print("| machines | wall time, K phases in turn | per K: groups, busiest / mean load |")
    print("|---|---|---|")
    for n in ranks_list:
        if any(n % k for k in ks):
            print(f"| {n} | (every K must divide {n}) | |")
            continue
        wall, parts = 0.0, []
        for k in ks:
            mine = [(b, s) for kk, b, s in runs if kk == k]
            groups = n // k
            rank_of = assign_runs([relative_run_cost(b) for b, _ in mine], groups)
            load = [0.0] * groups
            for i, (_, s) in enumerate(mine):
                load[rank_of[i]] += s
            wall += max(load)
            mean = sum(load) / groups
            parts.append(f"K={k}: {groups} groups, {max(load) / mean:.2f}")
        print(f"| {n} | {wall / 60:.2f} min ({wall:.0f} s) | {'; '.join(parts)} |")


if __name__ == "__main__":
    main()
