#!/usr/bin/env python3
"""A MAGNET network on the tiny preset, every party its own process over a `file://` store.

MAGNET's whole loop as separate parties would run it on separate machines: the operator runs
a short phased search for the training config (its journal hash goes into the ledger), then
honest workers, a copier and validators train, check and score for `--rounds` rounds; the
operator saves the merged model and exports it to GGUF. This script only starts the
`magnet` binary's subcommands and gathers what they report into OUT/report.json: val loss
per round, bytes per role, payments and slashes, and the operator's own work per round
(ledger ingest + settlement + merge) as a share of the round's wall time.

    cargo build --bins && python3 crates/magnet/scripts/tiny_network.py --out runs/tiny-network

Standard library only. Not a CI step (several minutes on 2 cores); the numbers it measured
are in docs/magnet.md.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def cpu():
    model, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    keep = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return {"model": model, "cores": os.cpu_count(), "features": [f for f in keep if f in flags]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--magnet", default="target/debug/magnet", help="the magnet binary")
    ap.add_argument("--out", default="runs/tiny-network", help="output folder (must not exist)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--inner-steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=3, help="honest workers")
    ap.add_argument("--copier", default="copy-noisy", help="the attacker ('' for none)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--search-lr-trials", type=int, default=3)
    ap.add_argument("--search-shape-trials", type=int, default=1)
    ap.add_argument("--search-steps", type=int, default=20)
    ap.add_argument("--corpus", default=None, help="default: the shipped corpus")
    a = ap.parse_args()

    out = Path(a.out).resolve()
    if out.exists():
        sys.exit(f"{out} exists: choose another --out")
    logs = out / "logs"
    logs.mkdir(parents=True)
    magnet = str(Path(a.magnet).resolve())
    data, store = out / "data", f"file://{out / 'store'}"
    model = ["--preset", "tiny", "--data-dir", str(data)]

    prep = [magnet, "prepare", *model] + (["--corpus", a.corpus] if a.corpus else [])
    subprocess.run(prep, check=True, stderr=open(logs / "prepare.log", "w"))

    procs = {}

    def spawn(name, args):
        procs[name] = subprocess.Popen(
            [magnet, *args, "--json"],
            stdout=open(logs / f"{name}.json", "w"),
            stderr=open(logs / f"{name}.log", "w"),
        )

    n_workers = a.workers + (1 if a.copier else 0)
    started = time.time()
    spawn("operator", [
        "operator", "--store", store, "--ledger", str(out / "ledger"), "--out", str(out / "operator"),
        *model, "--rounds", str(a.rounds), "--inner-steps", str(a.inner_steps),
        "--workers", str(n_workers), "--validators", "2",
        # The honest workers commit every round; the copier has nothing to copy in round 1.
        "--quorum", str(a.workers), "--grace-ms", "15000",
        "--seq-len", str(a.seq_len),
        "--search-lr-trials", str(a.search_lr_trials),
        "--search-shape-trials", str(a.search_shape_trials),
        "--search-steps", str(a.search_steps),
    ])
    common = ["--store", store, *model]
    for i in range(a.workers):
        spawn(f"w{i}", ["worker", "--name", f"w{i}", "--shard", str(i), "--shards", str(a.workers),
                        "--seed", str(i + 1), *common])
    if a.copier:
        spawn(a.copier, ["worker", "--name", a.copier, "--adversary", a.copier, "--seed", "99", *common])
    for name, stake in (("v0", 100), ("v1", 60)):
        spawn(name, ["validator", "--name", name, "--stake", str(stake), *common])

    failed = []
    for name, p in procs.items():
        if p.wait() != 0:
            failed.append(name)
    seconds = time.time() - started
    if failed:
        for name in failed:
            sys.stderr.write(f"--- {name} ---\n{(logs / f'{name}.log').read_text()[-3000:]}\n")
        sys.exit(f"failed: {failed}")

    op = json.loads((out / "operator" / "operator.json").read_text())
    parties = {n: json.loads((logs / f"{n}.json").read_text()) for n in procs if n != "operator"}
    timings = {t["round"]: t for t in op["timings"]}
    rounds = []
    for r in op["rounds"]:
        res, t = r["result"], timings.get(r["round"], {})
        rounds.append({
            "round": r["round"],
            "val_loss": r["val_loss"],
            "merged_workers": res["merged_workers"],
            "paid": res["paid"],
            "slashed": res["slashed"],
            "emission": res["emission"],
            "wall_s": t.get("wall_s"),
            "operator_s": t.get("operator_s"),
            "operator_share": t["operator_s"] / t["wall_s"] if t.get("wall_s") else None,
            "operator_read_bytes": t.get("read_bytes"),
            "operator_written_bytes": t.get("written_bytes"),
        })
    bytes_per_role = {
        name: sum(x.get("bytes", 0) for x in p["rounds"]) for name, p in parties.items()
    }
    bytes_per_role["operator_read"] = sum(t["read_bytes"] for t in op["timings"])
    bytes_per_role["operator_written"] = sum(t["written_bytes"] for t in op["timings"])
    shares = [r["operator_share"] for r in rounds if r["operator_share"] is not None]
    report = {
        "cpu": cpu(),
        "seconds": seconds,
        "rounds_run": len(rounds),
        "training": op["doc"]["training"],
        "search": op["doc"].get("search"),
        "rounds": rounds,
        "bytes": bytes_per_role,
        "operator_share_max": max(shares) if shares else None,
        "operator_share_median": sorted(shares)[len(shares) // 2] if shares else None,
        "emitted": op["emitted"],
        "balances": op["balances"],
        "gguf": op.get("gguf"),
        "validators": {n: parties[n]["rounds"] for n in ("v0", "v1")},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("seconds", "operator_share_max", "gguf")}, indent=2))
    for r in rounds:
        print(f"round {r['round']}: val loss {r['val_loss']:.4f}, merged {r['merged_workers']}, "
              f"slashed {[s[1][:40] for s in r['slashed']]}, operator {100 * (r['operator_share'] or 0):.2f} %")
    shutil.rmtree(out / "store", ignore_errors=True)


if __name__ == "__main__":
    main()
