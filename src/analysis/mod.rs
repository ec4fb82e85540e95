//! Analyses of trial responses (SCIENCE.md).
//!
//! In: single-trial response amplitudes per cell, stimulus and repetition.
//! Out: representational maps and their summaries. This slice holds the
//! map mathematics (§4.1) shared by the simulator's ground truth and, later, the
//! `analyze` stage.

pub mod correlations;
pub mod maps;
pub mod neurons;
pub mod spatial;
pub mod stats;
