//! Progress reporting without printing.
//!
//! Stages never print: they push progress into a [`Progress`] sink passed in by the
//! caller (the way a searcher pushes matches into a sink instead of deciding where
//! they go). The binary implements it with terminal progress bars or log lines;
//! tests and library users pass [`NoProgress`].

/// Receives progress from a long-running stage. Implementations must be cheap and
/// thread-safe: `advance` may be called from many rayon workers.
pub trait Progress: Sync {
    /// A unit of work named `label` with `total` steps begins.
    fn start(&self, label: &str, total: u64);
    /// `n` more steps are done.
    fn advance(&self, n: u64);
    /// The current unit of work is done.
    fn finish(&self);
}

/// Discards all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}
