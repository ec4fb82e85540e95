//! Skipping unchanged stages, so a rerun does only what changed and a killed run
//! resumes where it stopped.
//!
//! In: the experiment, the parameters and the run folder's ledger `run.json`.
//! Out: the first restart point whose key or outputs changed.
//!
//! The run is cut at its restart points (`ingest` = ingest + motion, `detect` =
//! detect + extract, `track`, `analyze`). Each part's key is a hash of the
//! cortexmap version, the parameter sections it reads, the inputs it reads (the
//! TIFFs by content, the parsed stimulus, target and cell-type tables) and the key
//! of the part before it, so a change anywhere reruns everything downstream of it
//! and nothing upstream. The ledger records a part only once its outputs are
//! written, and forgets it (and everything after it) before the part starts: a run
//! killed halfway leaves that part unrecorded and the next run redoes it.
//!
//! Like make and Snakemake, the ledger trusts that nobody edits a run folder's
//! files by hand; it checks only that the recorded outputs still exist.

use super::{RunLayout, Stage, ANALYSIS_TABLES, TRACK_TABLES};
use crate::config::{Experiment, Params};
use crate::error::{Error, Result};
pub use crate::io::ledger::Ledger;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The parts of a run that are skipped or rerun as a whole, by their restart stage.
pub const PARTS: [Stage; 4] = [Stage::Ingest, Stage::Detect, Stage::Track, Stage::Analyze];

/// The last stage of the part that starts at `part`.
pub fn part_end(part: Stage) -> Stage {
    match part {
        Stage::Ingest | Stage::Motion => Stage::Motion,
        Stage::Detect | Stage::Extract => Stage::Extract,
        other => other,
    }
}

/// Forget `part` and every part after it, on disk, before `part` runs. The report
/// describes the analyze part's tables, so it goes with them: a failed rerun must
/// not leave an old report beside new tables.
pub fn forget_from(ledger: &mut Ledger, root: &Path, part: Stage) -> Result<()> {
    let later: Vec<&str> = PARTS
        .iter()
        .filter(|p| **p >= part)
        .map(|p| p.name())
        .collect();
    ledger.forget(root, &later)?;
    let report = crate::report::report_path(root);
    if report.exists() {
        std::fs::remove_file(&report).map_err(|e| Error::output(&report, e))?;
    }
    Ok(())
}

fn is_complete(ledger: &Ledger, part: Stage, key: u64) -> bool {
    ledger.key(part.name()) == Some(key)
}

/// The keys of the four parts, in [`PARTS`] order. With `known` = (index of a
/// part, its recorded key), the keys chain on from there and the parts up to it
/// are not recomputed (their keys stay 0): a forced restart after them need not
/// read every TIFF again.
pub fn part_keys(
    exp: &Experiment,
    params: &Params,
    known: Option<(usize, u64)>,
) -> Result<[u64; 4]> {
    let mut keys = [0u64; 4];
    let start = match known {
        Some((i, k)) if i < keys.len() => {
            keys[i] = k;
            i + 1
        }
        _ => {
            keys[0] = ingest_key(exp, params)?;
            1
        }
    };
    for i in start..keys.len() {
        keys[i] = chain(keys[i - 1], &part_text(i, exp, params));
    }
    Ok(keys)
}

/// The ingest+motion key: version, parameters, session layout, TIFF contents.
fn ingest_key(exp: &Experiment, params: &Params) -> Result<u64> {
    let files: Vec<&PathBuf> = exp.sessions.iter().flat_map(|s| &s.files).collect();
    let contents: Vec<u64> = files
        .par_iter()
        .map(|f| hash_file(f))
        .collect::<Result<_>>()?;
    let mut h = Hasher::new();
    h.text(env!("CARGO_PKG_VERSION"));
    h.text(&format!(
        "{:?}{:?}{:?}",
        params.ingest, params.motion, exp.fs
    ));
    for s in &exp.sessions {
        h.text(&format!(
            "{}|{}|{}|{}|{:?}|{}",
            s.id,
            s.day,
            s.channels,
            s.functional_channel,
            s.structural_channel,
            s.files.len()
        ));
    }
    contents.iter().for_each(|c| h.word(*c));
    Ok(h.finish())
}

/// What part `i` (1 = detect, 2 = track, 3 = analyze) adds to its key.
fn part_text(i: usize, exp: &Experiment, params: &Params) -> String {
    match i {
        1 => format!(
            "{:?}{:?}{:?}",
            params.indicator, params.detect, params.extract
        ),
        // Parsed contents only, never paths: the same experiment reached through
        // another path (relative, absolute, moved) has the same keys.
        2 => {
            let ablation = exp.ablation.as_ref().map(|a| (a.after_day, &a.targets));
            format!(
                "{:?}{}{:?}{:?}{:?}{:?}",
                params.track,
                exp.reference,
                ablation,
                exp.cell_types,
                exp.um_per_pixel,
                exp.depth_um
            )
        }
        _ => {
            let stimuli: Vec<_> = exp
                .sessions
                .iter()
                .map(|s| s.stimuli.as_ref().map(|x| &x.events))
                .collect();
            format!("{:?}{:?}", params.analysis, stimuli)
        }
    }
}

fn chain(previous: u64, text: &str) -> u64 {
    let mut h = Hasher::new();
    h.word(previous);
    h.text(text);
    h.finish()
}

/// The files a part leaves in the run folder that later parts read. The corrected
/// frame stores are not among them: only detect+extract and the track part's
/// footprint transfer read them, and [`first_stale`] asks for them only when one
/// of those is to run, so a user may delete `frames/` once a run is done.
pub fn part_outputs(part: Stage, exp: &Experiment, layout: &RunLayout) -> Vec<PathBuf> {
    let tables: &[&str] = match part {
        Stage::Ingest | Stage::Motion => &["sessions", "motion", "motion_qc"],
        Stage::Detect | Stage::Extract => &["rois", "detection", "traces"],
        Stage::Track => &TRACK_TABLES,
        Stage::Analyze => &ANALYSIS_TABLES,
    };
    let mut out: Vec<PathBuf> = tables.iter().map(|t| layout.table(t)).collect();
    for s in &exp.sessions {
        match part {
            Stage::Ingest | Stage::Motion => out.push(layout.image(&s.id, "mean_corrected")),
            // The track stage aligns sessions on these.
            Stage::Detect | Stage::Extract => out.push(layout.image(&s.id, "enhanced")),
            _ => {}
        }
    }
    out
}

/// The first part, among those up to `until`, that must run: its key changed,
/// it never completed, or an output is missing. `None` when all are up to date.
pub fn first_stale(
    ledger: &Ledger,
    keys: &[u64; 4],
    exp: &Experiment,
    layout: &RunLayout,
    until: Stage,
    params: &Params,
) -> Option<Stage> {
    let stale = PARTS
        .iter()
        .zip(keys)
        .filter(|(p, _)| **p <= until)
        .find(|(p, k)| {
            !is_complete(ledger, **p, **k)
                || part_outputs(**p, exp, layout).iter().any(|f| !f.exists())
        })
        .map(|(p, _)| *p)?;
    let frames_gone = exp.sessions.iter().any(|s| !layout.store(&s.id).exists());
    let reads_frames = stale == Stage::Detect || (stale == Stage::Track && params.track.transfer);
    Some(if reads_frames && frames_gone {
        Stage::Ingest
    } else {
        stale
    })
}

/// A 64-bit content hash of a file, read through a memory map.
pub fn hash_file(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::input(path, e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| Error::input(path, e.to_string()))?
        .len();
    let mut h = Hasher::new();
    h.word(len);
    if len > 0 {
        // SAFETY: the map is read-only and dropped before returning; cortexmap
        // never writes its inputs.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::input(path, format!("cannot map the file: {e}")))?;
        h.bytes(&map);
    }
    Ok(h.finish())
}

/// A fast, stable, non-cryptographic hash: four independent multiply–rotate lanes
/// over 64-bit words (so the loop runs at memory speed), folded at the end. Stable
/// across builds and platforms, unlike `std`'s `DefaultHasher`.
struct Hasher {
    lanes: [u64; 4],
    n: u64,
}

const PRIME: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher {
    fn new() -> Self {
        Hasher {
            lanes: [
                0x243F_6A88_85A3_08D3,
                0x1319_8A2E_0370_7344,
                0xA409_3822_299F_31D0,
                0x082E_FA98_EC4E_6C89,
            ],
            n: 0,
        }
    }

    #[inline]
    fn mix(lane: u64, w: u64) -> u64 {
        (lane ^ w).wrapping_mul(PRIME).rotate_left(29)
    }

    fn word(&mut self, w: u64) {
        let i = (self.n % 4) as usize;
        self.lanes[i] = Self::mix(self.lanes[i], w);
        self.n += 1;
    }

    fn bytes(&mut self, b: &[u8]) {
        let blocks = b.chunks_exact(32);
        let tail = blocks.remainder();
        for block in blocks {
            for (k, lane) in self.lanes.iter_mut().enumerate() {
                let w = u64::from_le_bytes(block[8 * k..8 * k + 8].try_into().expect("8 bytes"));
                *lane = Self::mix(*lane, w);
            }
        }
        self.n += (b.len() / 32 * 4) as u64;
        for chunk in tail.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.word(u64::from_le_bytes(w));
        }
        self.word(b.len() as u64);
    }

    fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn finish(&self) -> u64 {
        let mut h = self.n.wrapping_mul(PRIME);
        for &l in &self.lanes {
            h = Self::mix(h, l);
        }
        h ^ (h >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: &[u8]) -> u64 {
        let mut h = Hasher::new();
        h.bytes(b);
        h.finish()
    }

    #[test]
    fn hash_sees_every_byte_and_the_length() {
        let base: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let h0 = hash(&base);
        assert_eq!(h0, hash(&base.clone()));
        for i in [0, 31, 32, 500, 999] {
            let mut b = base.clone();
            b[i] ^= 1;
            assert_ne!(hash(&b), h0, "flipping byte {i} went unnoticed");
        }
        assert_ne!(hash(&base[..999]), h0);
        let mut padded = base.clone();
        padded.push(0);
        assert_ne!(hash(&padded), h0);
    }

    #[test]
    fn forgetting_a_part_forgets_everything_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::default();
        for (i, p) in PARTS.iter().enumerate() {
            l.complete(dir.path(), p.name(), i as u64).unwrap();
        }
        forget_from(&mut l, dir.path(), Stage::Track).unwrap();
        let back = Ledger::load(dir.path());
        assert!(is_complete(&back, Stage::Ingest, 0));
        assert!(is_complete(&back, Stage::Detect, 1));
        assert!(!is_complete(&back, Stage::Track, 2));
        assert!(!is_complete(&back, Stage::Analyze, 3));
        assert!(
            !is_complete(&back, Stage::Detect, 7),
            "a changed key is not complete"
        );
    }
}
