"""Check a simulated experiment with the tools analysts use: tifffile and pyarrow.

Usage: python check_experiment.py EXPERIMENT_DIR
Exits non-zero with a message on the first violation of CONTRACT.md.
"""
import glob
import os
import sys
import tomllib

import numpy as np
import pyarrow.parquet as pq
import tifffile

d = sys.argv[1]
with open(os.path.join(d, "experiment.toml"), "rb") as f:
    manifest = tomllib.load(f)
assert manifest["reference"] in [s["id"] for s in manifest["session"]]
channels = manifest.get("channels", 1)
sessions = pq.read_table(os.path.join(d, "truth", "sessions.parquet")).to_pydict()
for s in manifest["session"]:
    files = sorted(glob.glob(os.path.join(d, s["tiff"][0])))
    assert files, s
    pages = 0
    for path in files:
        with tifffile.TiffFile(path) as tf:
            data = tf.asarray()
            assert data.dtype == np.int16, (path, data.dtype)
            pages += data.shape[0] if data.ndim == 3 else 1
    n_frames = sessions["n_frames"][sessions["session"].index(s["id"])]
    assert pages == n_frames * channels, (s["id"], pages, n_frames, channels)
    stim = open(os.path.join(d, s["stimuli"])).read().splitlines()
    assert stim[0] == "trial,onset_frame,stimulus", stim[0]
    onsets = [int(line.split(",")[1]) for line in stim[1:]]
    assert max(onsets) < n_frames

assert open(os.path.join(d, "ablation_targets.csv")).readline().strip().startswith("x,y")
assert open(os.path.join(d, "cell_types.csv")).readline().strip() == "x,y,kind"

expected = {
    "sessions": ["session", "day", "n_frames", "height", "width", "fs"],
    "motion": ["session", "frame", "shift_x", "shift_y"],
    "warp": ["session", "frame", "node", "node_x", "node_y", "dx", "dy"],
    "cells": ["cell", "session", "x_ref", "y_ref", "ablated", "initially_silent", "inhibitory"],
    "footprints": ["session", "cell", "pixels", "weights"],
    "tuning": ["session", "cell", "stimulus", "mean_response", "sem", "responsive"],
    "trials": ["session", "cell", "trial", "stimulus", "response"],
    "rsm": ["session", "stimulus_a", "stimulus_b", "similarity"],
    "map_summary": ["session", "day", "diagonal", "off_diagonal", "trial_avg_off_diagonal",
                    "diagonal_norm", "off_diagonal_norm"],
    "map_similarity": ["session_a", "session_b", "similarity"],
    "traces": ["session", "cell", "frame", "f", "dff", "spikes"],
}
for name, cols in expected.items():
    t = pq.read_table(os.path.join(d, "truth", f"{name}.parquet"))
    missing = [c for c in cols if c not in t.column_names]
    assert not missing, (name, missing)
    assert t.num_rows > 0, name
m = pq.read_table(os.path.join(d, "truth", "motion.parquet"))
assert str(m.schema.field("shift_x").type) == "float", m.schema
fp = pq.read_table(os.path.join(d, "truth", "footprints.parquet"))
assert str(fp.schema.field("pixels").type).startswith("list<item: uint32"), fp.schema
print("ok: tifffile", tifffile.__version__, "and pyarrow read the experiment")
