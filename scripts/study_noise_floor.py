"""Noise floor of a simulated study's map figure (docs/study.md).

How close to the study truth can the cohort means of the normalised map diagonal
be, when measured dF/F noise is the only error? For every experiment of the study
file (each with its own truth/ and a run folder that went through `cortexmap
run`), the truth's own trial responses of its spared cells get Gaussian noise of
the run's response noise: sigma^2 * (1/n_b + 1/n_r), with sigma the median over
the session's ROIs of the robust s.d. of their `dff` first differences (1.4826 *
median |d| / sqrt 2) and n_b, n_r the truth's window lengths in frames. The
single-trial maps' diagonal means are normalised by the pre-ablation sessions,
averaged over each mouse's FOVs and over each cohort's mice, as `cortexmap
study` does, and compared with the same means of truth/study_map.parquet.

Usage: scripts/study-noise-floor STUDY_DIR [DRAWS] [SEED]  (this file through its wrapper)
  STUDY_DIR holds study.toml (as `cortexmap simulate-study` writes it) and truth/.
The wrapper runs it (Python 3.11+) with numpy and pyarrow from a virtual
environment outside the repository.

Prints a noise-free check (must be 0: the script's maps are the truth's), then
the median relative error over the cohort x day means and how many are within
10 %, over the draws.
"""
import os
import sys
import tomllib
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq


def columns(path, names):
    t = pq.read_table(path, columns=names)
    return {n: t.column(n).to_numpy(zero_copy_only=False) for n in names}


def noise_sd(trace):
    d = np.abs(np.diff(np.asarray(trace, dtype=np.float64)))
    return 1.4826 * np.median(d) / np.sqrt(2)


def diagonal_mean(per_stimulus):
    """Mean over stimuli of the mean correlation between different trials."""
    vals = []
    for r in per_stimulus:
        z = r - r.mean(1, keepdims=True)
        n = np.linalg.norm(z, axis=1)
        ok = n > 1e-12
        z = z[ok] / n[ok, None]
        k = len(z)
        if k > 1:
            g = z @ z.T
            vals.append((g.sum() - np.trace(g)) / (k * k - k))
    return float(np.mean(vals))


def session_noise(run):
    t = columns(os.path.join(run, "traces.parquet"), ["session", "roi", "frame", "dff"])
    out = {}
    for s in np.unique(t["session"]):
        m = t["session"] == s
        roi, frame, dff = t["roi"][m], t["frame"][m], t["dff"][m]
        sds = []
        for r in np.unique(roi):
            k = roi == r
            sds.append(noise_sd(dff[k][np.argsort(frame[k])]))
        out[s] = float(np.median(sds))
    return out


def fov_responses(truth):
    cfg = tomllib.load(open(os.path.join(truth, "simulation.toml"), "rb"))
    nb = max(1, round(cfg["baseline_window_s"] * cfg["fs"]))
    nr = max(1, round(cfg["response_window_s"] * cfg["fs"]))
    ses = columns(os.path.join(truth, "sessions.parquet"), ["session", "day", "post_ablation"])
    c = columns(os.path.join(truth, "cells.parquet"), ["cell", "spared"])
    cells = np.unique(c["cell"][c["spared"]])
    index = {int(x): i for i, x in enumerate(cells)}
    t = columns(
        os.path.join(truth, "trials.parquet"),
        ["session", "cell", "stimulus", "repetition", "response"],
    )
    keep = np.isin(t["cell"], cells)
    t = {k: v[keep] for k, v in t.items()}
    sessions = {}
    for s, day, post in zip(ses["session"], ses["day"], ses["post_ablation"]):
        m = t["session"] == s
        stim, rep = t["stimulus"][m], t["repetition"][m]
        cell, resp = t["cell"][m], t["response"][m]
        per_stimulus = []
        for st in sorted(set(stim)):
            k = stim == st
            a = np.full((int(rep[k].max()) + 1, len(cells)), np.nan)
            a[rep[k], [index[int(x)] for x in cell[k]]] = resp[k]
            per_stimulus.append(a[~np.isnan(a).any(1)])
        sessions[s] = (int(day), bool(post), per_stimulus)
    return sessions, 1.0 / nb + 1.0 / nr


def main():
    root = sys.argv[1]
    draws = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 7)
    study = tomllib.load(open(os.path.join(root, "study.toml"), "rb"))
    fovs = []  # (cohort, mouse, {day: noise-free value}, {day: values per draw})
    for e in study["experiment"]:
        exp = os.path.join(root, os.path.dirname(e["manifest"]))
        sessions, var_factor = fov_responses(os.path.join(exp, "truth"))
        sigma = session_noise(os.path.join(root, e["run"]))
        base = [s for s, v in sessions.items() if not v[1]]
        clean = {s: diagonal_mean(v[2]) for s, v in sessions.items()}
        cb = np.mean([clean[s] for s in base])
        per_draw = defaultdict(list)
        for _ in range(draws):
            noisy = {
                s: diagonal_mean(
                    [a + rng.normal(size=a.shape) * sigma[s] * np.sqrt(var_factor) for a in v[2]]
                )
                for s, v in sessions.items()
            }
            b = np.mean([noisy[s] for s in base])
            for s, v in sessions.items():
                per_draw[v[0]].append(noisy[s] / b)
        fovs.append(
            (e["cohort"], e["mouse"], {v[0]: clean[s] / cb for s, v in sessions.items()}, per_draw)
        )
        print(e["manifest"], "dF/F noise s.d.", " ".join(f"{sigma[s]:.3f}" for s in sessions),
              file=sys.stderr)
    t = columns(os.path.join(root, "truth", "study_map.parquet"), ["cohort", "day", "diagonal"])
    truth = defaultdict(list)
    for c, d, v in zip(t["cohort"], t["day"], t["diagonal"]):
        truth[(c, int(d))].append(v)
    truth = {k: np.mean(v) for k, v in truth.items()}

    def cohort_means(values):
        mice = defaultdict(lambda: defaultdict(list))
        for c, m, v in values:
            for d, x in v.items():
                mice[(c, m)][d].append(x)
        cohorts = defaultdict(lambda: defaultdict(list))
        for (c, _), days in mice.items():
            for d, x in days.items():
                cohorts[c][d].append(np.mean(x))
        return {(c, d): np.mean(x) for c, days in cohorts.items() for d, x in days.items()}

    clean = cohort_means([(c, m, v) for c, m, v, _ in fovs])
    check = max(abs(clean[k] / truth[k] - 1) for k in truth)
    print(f"noise-free check: largest relative error against the truth {check:.4f}")
    medians, within = [], []
    for k in range(draws):
        cm = cohort_means([(c, m, {d: x[k] for d, x in p.items()}) for c, m, _, p in fovs])
        err = np.array([abs(cm[x] / truth[x] - 1) for x in truth])
        medians.append(np.median(err))
        within.append(int((err <= 0.10).sum()))
    print(
        f"{draws} draws: median relative error {np.median(medians):.3f} "
        f"(10-90 %: {np.percentile(medians, 10):.3f}-{np.percentile(medians, 90):.3f}); "
        f"within 10 %: median {int(np.median(within))} of {len(truth)} "
        f"(range {min(within)}-{max(within)})"
    )


if __name__ == "__main__":
    main()
