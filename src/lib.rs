//! cortexmap: longitudinal two-photon calcium imaging, from raw TIFF stacks to
//! Parquet tables, with a ground-truth simulator.
//!
//! The modules follow the flow of DESIGN.md:
//!
//! - [`config`]: manifests (`experiment.toml`, `study.toml`) and parameter files;
//! - [`io`]: TIFF (ScanImage, BigTIFF), CSV and Parquet I/O, atomic outputs;
//! - [`movie`]: a session's frames streamed from several TIFF files;
//! - [`simulate`]: the ground-truth experiment simulator;
//! - [`motion`]: rigid and piecewise-rigid registration of a session;
//! - [`score`]: a run's tables against the simulator's truth;
//! - [`analysis`]: representational maps and the other analyses of SCIENCE.md;
//! - [`pipeline`]: the stages of `cortexmap run` in order;
//! - [`progress`], [`error`]: how stages report progress and failures.
//!
//! Stages never print; they take typed inputs and a [`progress::Progress`] sink and
//! return typed outputs. Only the binary (`src/main.rs`) knows the terminal.

// `!(x > 0.0)` is the NaN-rejecting test used throughout numeric code: it is
// true for NaN, which `x <= 0.0` is not.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod analysis;
pub mod assign;
pub mod bench;
pub mod config;
pub mod detect;
pub mod error;
pub mod extract;
pub mod imgproc;
pub mod io;
pub mod motion;
pub mod movie;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod score;
pub mod simd;
pub mod simulate;
pub mod study;
pub mod track;

pub use error::{Error, Result};
