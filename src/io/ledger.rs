//! `run.json`: a run folder's ledger of completed parts.
//!
//! In: the run folder. Out: which parts of the run completed, each with the key
//! (content hash of its inputs and parameters, hex) it completed with, plus the
//! manifest and the ablation day for readers of the folder such as the report.
//! The pipeline decides what the parts and keys are (`pipeline::cache`); this
//! module only keeps the file, written atomically.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `run.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// The cortexmap version that wrote the run.
    pub cortexmap: String,
    /// The manifest the run was made from.
    pub manifest: PathBuf,
    /// Day after whose imaging cells were ablated, when the experiment has one.
    pub ablation_after_day: Option<i32>,
    /// Completed parts: part name → key (hex).
    pub completed: BTreeMap<String, String>,
}

impl Ledger {
    pub fn path(root: &Path) -> PathBuf {
        root.join("run.json")
    }

    /// The ledger in `root`, or an empty one when there is none. An unreadable
    /// ledger is treated as empty (everything reruns), not as an error.
    pub fn load(root: &Path) -> Ledger {
        std::fs::read(Self::path(root))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::internal(format!("run.json: {e}")))?;
        crate::io::atomic::write_bytes(Self::path(root), &json)
    }

    /// Forget the named parts, on disk.
    pub fn forget(&mut self, root: &Path, parts: &[&str]) -> Result<()> {
        for p in parts {
            self.completed.remove(*p);
        }
        self.save(root)
    }

    /// Record `part` as complete with `key`, on disk.
    pub fn complete(&mut self, root: &Path, part: &str, key: u64) -> Result<()> {
        self.completed
            .insert(part.to_string(), format!("{key:016x}"));
        self.save(root)
    }

    /// The recorded key of `part`, if it completed.
    pub fn key(&self, part: &str) -> Option<u64> {
        u64::from_str_radix(self.completed.get(part)?, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trips_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger {
            ablation_after_day: Some(5),
            ..Ledger::default()
        };
        l.complete(dir.path(), "ingest", 0xabc).unwrap();
        l.complete(dir.path(), "detect", 7).unwrap();
        l.forget(dir.path(), &["detect"]).unwrap();
        let back = Ledger::load(dir.path());
        assert_eq!(back.key("ingest"), Some(0xabc));
        assert_eq!(back.key("detect"), None);
        assert_eq!(back.ablation_after_day, Some(5));
        std::fs::write(Ledger::path(dir.path()), "{ not json").unwrap();
        assert!(Ledger::load(dir.path()).completed.is_empty());
    }
}
