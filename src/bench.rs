//! Benchmarks that are commands, not tests (`cortexmap bench ...`).
//!
//! `tiff-read`: decode a TIFF page by page into f32 frames and compare with reading
//! the same bytes raw (what `cat` does), after one warm-up pass so both read from
//! the page cache. `simulate`: throughput of the simulator (frames rendered and
//! written per second), reported by [`crate::simulate::simulate`] itself.

use crate::error::{Error, Result};
use crate::io::tiff::{probe, TiffPageReader};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// Result of the TIFF read benchmark (best of `repeats`).
#[derive(Debug, Clone)]
pub struct TiffReadBench {
    pub bytes: u64,
    pub pages: usize,
    pub raw_seconds: f64,
    pub tiff_seconds: f64,
}

impl TiffReadBench {
    pub fn raw_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.raw_seconds
    }
    pub fn tiff_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.tiff_seconds
    }
    pub fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.tiff_seconds
    }
}

fn raw_read(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::input(path, e.to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::input(path, e.to_string()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

fn decode_all(path: &Path) -> Result<usize> {
    let mut r = TiffPageReader::open(path)?;
    let mut frame = vec![0f32; r.info().page_len()];
    let mut pages = 0;
    while r.read_page_into(&mut frame)? {
        pages += 1;
    }
    Ok(pages)
}

/// Time decoding `path` against raw reading, best of `repeats` runs each.
pub fn tiff_read(path: &Path, repeats: usize) -> Result<TiffReadBench> {
    let info = probe(path)?;
    raw_read(path)?; // warm the page cache
    let (mut raw_best, mut tiff_best) = (f64::INFINITY, f64::INFINITY);
    let mut pages = 0;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        raw_read(path)?;
        raw_best = raw_best.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        pages = decode_all(path)?;
        tiff_best = tiff_best.min(t.elapsed().as_secs_f64());
    }
    Ok(TiffReadBench {
        bytes: info.file_size,
        pages,
        raw_seconds: raw_best,
        tiff_seconds: tiff_best,
    })
}
