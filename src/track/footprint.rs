//! ROI footprints moved into reference coordinates, and their similarity.

/// One ROI of one session, as the tracker sees it.
#[derive(Debug, Clone)]
pub struct TrackRoi {
    /// The ROI's id in its session (`roi` in rois.parquet).
    pub roi: u32,
    /// Centroid in the session's corrected coordinates.
    pub x: f64,
    pub y: f64,
    /// Pixels (linear index in the session's frame) and weights.
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
    /// Found from the mean image only (never seen firing).
    pub anatomical: bool,
    pub snr: f32,
}

/// A footprint in reference coordinates: sorted pixel indices, unit-norm weights.
#[derive(Debug, Clone, Default)]
pub struct RefFootprint {
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
}

impl RefFootprint {
    /// Move `roi`'s footprint (in a `width`-wide session frame) by `map` onto a
    /// `ref_w × ref_h` grid, spreading each pixel bilinearly.
    pub fn mapped(
        roi: &TrackRoi,
        width: usize,
        map: impl Fn(f64, f64) -> (f64, f64),
        ref_w: usize,
        ref_h: usize,
    ) -> Self {
        let mut acc: Vec<(u32, f32)> = Vec::with_capacity(roi.pixels.len() * 4);
        for (&p, &w) in roi.pixels.iter().zip(&roi.weights) {
            if !(w > 0.0) {
                continue;
            }
            let (x, y) = ((p as usize % width) as f64, (p as usize / width) as f64);
            let (u, v) = map(x, y);
            let (x0, y0) = (u.floor(), v.floor());
            let (fx, fy) = ((u - x0) as f32, (v - y0) as f32);
            for (dx, dy, f) in [
                (0, 0, (1.0 - fx) * (1.0 - fy)),
                (1, 0, fx * (1.0 - fy)),
                (0, 1, (1.0 - fx) * fy),
                (1, 1, fx * fy),
            ] {
                let (gx, gy) = (x0 as i64 + dx, y0 as i64 + dy);
                if f > 0.0 && gx >= 0 && gy >= 0 && (gx as usize) < ref_w && (gy as usize) < ref_h {
                    acc.push(((gy as usize * ref_w + gx as usize) as u32, w * f));
                }
            }
        }
        acc.sort_by_key(|a| a.0);
        let mut out = RefFootprint::default();
        for (p, w) in acc {
            match out.pixels.last() {
                Some(&last) if last == p => *out.weights.last_mut().expect("paired") += w,
                _ => {
                    out.pixels.push(p);
                    out.weights.push(w);
                }
            }
        }
        let norm = out
            .weights
            .iter()
            .map(|&w| (w as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            out.weights
                .iter_mut()
                .for_each(|w| *w = (*w as f64 / norm) as f32);
        }
        out
    }

    /// Cosine similarity of two unit-norm footprints (the spatial correlation of
    /// CellReg, on non-negative weights): 1 for identical shapes, 0 without overlap.
    pub fn similarity(&self, other: &RefFootprint) -> f64 {
        let (a, b) = (self, other);
        let (mut i, mut j, mut dot) = (0, 0, 0f64);
        while i < a.pixels.len() && j < b.pixels.len() {
            match a.pixels[i].cmp(&b.pixels[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += a.weights[i] as f64 * b.weights[j] as f64;
                    i += 1;
                    j += 1;
                }
            }
        }
        dot.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::transform::Affine;

    fn disc(cx: f64, cy: f64, r: f64, w: usize) -> TrackRoi {
        let (mut pixels, mut weights) = (vec![], vec![]);
        for y in 0..w {
            for x in 0..w {
                if (x as f64 - cx).hypot(y as f64 - cy) <= r {
                    pixels.push((y * w + x) as u32);
                    weights.push(1.0);
                }
            }
        }
        TrackRoi {
            roi: 0,
            x: cx,
            y: cy,
            pixels,
            weights,
            anatomical: false,
            snr: 5.0,
        }
    }

    #[test]
    fn same_shape_is_one_and_disjoint_is_zero() {
        let id = Affine::identity();
        let a = RefFootprint::mapped(
            &disc(10.0, 10.0, 4.0, 40),
            40,
            |x, y| id.apply(x, y),
            40,
            40,
        );
        assert!((a.similarity(&a) - 1.0).abs() < 1e-5);
        let far = RefFootprint::mapped(
            &disc(30.0, 30.0, 4.0, 40),
            40,
            |x, y| id.apply(x, y),
            40,
            40,
        );
        assert_eq!(a.similarity(&far), 0.0);
    }

    #[test]
    fn a_moved_footprint_matches_its_moved_twin() {
        let shift = Affine::rotation_about(0.0, (0.0, 0.0), 5.5, -3.0);
        let moved = RefFootprint::mapped(
            &disc(12.0, 15.0, 4.0, 40),
            40,
            |x, y| shift.apply(x, y),
            40,
            40,
        );
        let there = RefFootprint::mapped(&disc(17.5, 12.0, 4.0, 40), 40, |x, y| (x, y), 40, 40);
        assert!(
            moved.similarity(&there) > 0.85,
            "{}",
            moved.similarity(&there)
        );
    }
}
