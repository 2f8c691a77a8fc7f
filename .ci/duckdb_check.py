#!/usr/bin/env python3
"""CI check of the results store: a real DuckDB query over results/*.parquet.

    duckdb_check.py --make-input PATH   # write a small [4, 16, 32] f32 activation tensor `acts`
    duckdb_check.py RESULTS_DIR [COMMAND=RUNS ...]
        # query the rows `cargo xtask sparsity` appended; exit 1 unless present, and unless each
        # COMMAND has exactly RUNS runs in the store (a run: one distinct (run_id, parameters))
"""
import sys

import numpy as np


def make_input(path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    scale = np.linspace(1e-4, 2.0, 32, dtype=np.float32)
    acts = (rng.standard_normal((4, 16, 32)).astype(np.float32) * scale).astype(np.float32)
    # a [64, 48] weight with about half its entries zero, for `cargo xtask cluster`
    w = rng.standard_normal((64, 48)).astype(np.float32)
    w[rng.random((64, 48)) < 0.5] = 0.0
    save_file({"acts": acts, "w": w}, path)


def check(results_dir, expected_runs):
    import duckdb

    con = duckdb.connect()
    glob = f"{results_dir}/*.parquet"
    cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM '{glob}'").fetchall()}
    need = {"run_id", "timestamp", "git_rev", "command", "model", "layer", "site", "method", "metric", "value", "parameters"}
    missing = need - cols
    if missing:
        print(f"results store is missing columns {sorted(missing)}; has {sorted(cols)}")
        return 1
    rows = con.execute(
        f"SELECT method, metric, value FROM '{glob}' WHERE command = 'sparsity' AND site = 'acts' ORDER BY method, metric"
    ).fetchall()
    got = {(m, k): v for m, k, v in rows}
    for key in [("gini", "gini_coefficient"), ("traditional", "sparsity"), ("entropy", "sparsity_from_entropy"), ("percentile.p50", "threshold")]:
        if key not in got:
            print(f"row {key} not found among {len(rows)} rows")
            return 1
    g = got[("gini", "gini_coefficient")]
    if not (0.0 <= g <= 1.0):
        print(f"gini {g} outside [0, 1]")
        return 1
    for command, want in expected_runs.items():
        runs, rows = con.execute(
            f"SELECT count(DISTINCT (run_id, parameters)), count(*) FROM '{glob}' WHERE command = ?",
            [command],
        ).fetchone()
        if runs != want:
            print(f"{command}: {runs} run(s) in the store ({rows} rows), expected {want}: rows were lost")
            return 1
        print(f"DuckDB: {command}: all {runs} runs present ({rows} rows)")
    n = con.execute(f"SELECT count(*), count(DISTINCT run_id) FROM '{glob}'").fetchone()
    print(f"DuckDB: {n[0]} rows from {n[1]} run(s); gini = {g:.4f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-input":
        make_input(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) >= 2 and not sys.argv[1].startswith("-"):
        expected = {}
        for arg in sys.argv[2:]:
            command, _, runs = arg.partition("=")
            expected[command] = int(runs)
        sys.exit(check(sys.argv[1], expected))
    print(__doc__)
    sys.exit(2)
