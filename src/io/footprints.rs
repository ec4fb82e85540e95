//! Spatial footprints from other tools, as JSON: one file per session,
//! `{"height": H, "width": W, "cells": [{"id": .., "coordinates": [[row, col], ...],
//! "weights": [...]}, ...]}` (the sparse form of CellReg's `allFiltersMat`; see
//! `../shared/data/real/cellreg_sample_5sessions`). `weights` may be omitted (all 1).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// One session's footprints.
#[derive(Debug, Clone, PartialEq)]
pub struct FootprintFile {
    pub width: usize,
    pub height: usize,
    /// Per cell: linear pixel indices (`row * width + col`) and weights.
    pub cells: Vec<(Vec<u32>, Vec<f32>)>,
}

#[derive(Deserialize)]
struct Doc {
    height: usize,
    width: usize,
    cells: Vec<CellDoc>,
}

#[derive(Deserialize)]
struct CellDoc {
    coordinates: Vec<[i64; 2]>,
    #[serde(default)]
    weights: Option<Vec<f32>>,
}

/// Read and check a footprint file.
pub fn read_footprints(path: &Path) -> Result<FootprintFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e.to_string()))?;
    let doc: Doc = serde_json::from_str(&text).map_err(|e| {
        Error::input(
            path,
            format!(
                "not a footprint file ({{height, width, cells: [{{coordinates, weights}}]}}): {e}"
            ),
        )
    })?;
    if doc.width == 0 || doc.height == 0 {
        return Err(Error::input(path, "height and width must be positive"));
    }
    let mut cells = Vec::with_capacity(doc.cells.len());
    for (i, c) in doc.cells.into_iter().enumerate() {
        let weights = c.weights.unwrap_or_else(|| vec![1.0; c.coordinates.len()]);
        if weights.len() != c.coordinates.len() {
            return Err(Error::input(
                path,
                format!(
                    "cell {i}: {} coordinates but {} weights",
                    c.coordinates.len(),
                    weights.len()
                ),
            ));
        }
        let mut px = Vec::with_capacity(weights.len());
        for &[row, col] in &c.coordinates {
            if row < 0 || col < 0 || row as usize >= doc.height || col as usize >= doc.width {
                return Err(Error::input(
                    path,
                    format!(
                        "cell {i}: pixel (row {row}, col {col}) is outside the {}×{} frame",
                        doc.width, doc.height
                    ),
                ));
            }
            px.push((row as usize * doc.width + col as usize) as u32);
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
            return Err(Error::input(
                path,
                format!("cell {i}: weight {w} is not finite"),
            ));
        }
        cells.push((px, weights));
    }
    Ok(FootprintFile {
        width: doc.width,
        height: doc.height,
        cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("f.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_cells_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(
            dir.path(),
            r#"{"height": 4, "width": 5, "cells": [{"id": 1, "coordinates": [[1, 2], [3, 4]], "weights": [0.5, 0.5]}, {"coordinates": [[0, 0]]}]}"#,
        );
        let f = read_footprints(&ok).unwrap();
        assert_eq!(f.cells[0].0, vec![7, 19]);
        assert_eq!(f.cells[1].1, vec![1.0]);
        let outside = write(
            dir.path(),
            r#"{"height": 4, "width": 5, "cells": [{"coordinates": [[4, 0]]}]}"#,
        );
        let err = read_footprints(&outside).unwrap_err().to_string();
        assert!(err.contains("f.json") && err.contains("outside"), "{err}");
        let junk = write(dir.path(), "[1, 2]");
        assert!(read_footprints(&junk)
            .unwrap_err()
            .to_string()
            .contains("not a footprint file"));
    }
}
