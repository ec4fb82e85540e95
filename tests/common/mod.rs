//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cortexmap::simulate::SimConfig;
use std::path::{Path, PathBuf};

/// A very small experiment: 48×48, 24 cells, 3 sessions, seconds to simulate.
pub fn tiny_config() -> SimConfig {
    SimConfig {
        name: "tiny".into(),
        width: 48,
        height: 48,
        n_cells: 24,
        days: vec![3, 5, 7],
        repetitions: 2,
        frames_per_file: 50,
        n_ablate: 3,
        deflate: false,
        ..SimConfig::sample()
    }
}

/// A 128×128 standard-like experiment: 12 px cells at 15 Hz, 3 short sessions.
pub fn small_standard() -> SimConfig {
    SimConfig {
        name: "small".into(),
        width: 128,
        height: 128,
        n_cells: 30,
        days: vec![3, 5, 7],
        n_tones: 7,
        n_complex: 5,
        repetitions: 2,
        frames: Some(700),
        frames_per_file: 350,
        n_ablate: 3,
        deflate: false,
        ..SimConfig::standard()
    }
}

/// The folder of real data shipped beside the repository, if present.
pub fn real_data() -> Option<PathBuf> {
    let p = std::env::var_os("CORTEXMAP_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real"));
    if p.is_dir() {
        Some(p)
    } else {
        assert!(
            std::env::var_os("CORTEXMAP_REQUIRE_REAL_DATA").is_none(),
            "real data required but not found at {}",
            p.display()
        );
        eprintln!("note: real data not found at {}; skipping", p.display());
        None
    }
}

/// All files under `dir`, relative paths sorted, with their bytes.
pub fn tree_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The cortexmap binary built for these tests.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_cortexmap"))
}
