//! Bidirectional scan-phase correction.
//!
//! A resonant scanner writing lines in both directions can misplace every other
//! line by a fraction of a pixel to a few pixels. The offset is estimated once per
//! session from a mean image: the cross-correlation along x between the even
//! lines and the odd lines, peak refined to sub-pixel precision. Correcting
//! resamples the odd lines: `odd_corrected(x) = odd(x + offset)`.

/// Correlation of the even lines with the odd lines resampled by `d`.
fn line_agreement(mean: &[f32], w: usize, h: usize, d: f64, margin: usize) -> f64 {
    let mut row = vec![0.0f32; w];
    let mut scratch = vec![0.0f32; w];
    // Normalised, because resampling damps fine detail at fractional
    // offsets and a raw covariance would favour whole pixels.
    let (mut acc, mut ve, mut vo) = (0.0f64, 0.0f64, 0.0f64);
    for y in (0..h - 1).step_by(2) {
        let even = &mean[y * w..(y + 1) * w];
        let odd = &mean[(y + 1) * w..(y + 2) * w];
        super::interp::shift_image(odd, w, 1, d, 0.0, &mut scratch, &mut row);
        let (me, mo) = (
            mean_of(&even[margin..w - margin]),
            mean_of(&row[margin..w - margin]),
        );
        for x in margin..w - margin {
            let (a, b) = (even[x] as f64 - me, row[x] as f64 - mo);
            acc += a * b;
            ve += a * a;
            vo += b * b;
        }
    }
    if ve > 0.0 && vo > 0.0 {
        acc / (ve * vo).sqrt()
    } else {
        0.0
    }
}

/// Offset (px) of odd lines relative to even lines, searched within ±`max_offset`:
/// the best whole-pixel offset, refined by a golden-section search of the
/// agreement between even lines and resampled odd lines.
pub fn estimate(mean: &[f32], w: usize, h: usize, max_offset: usize) -> f64 {
    if h < 4 || w < 4 * max_offset.max(1) + 4 {
        return 0.0;
    }
    let margin = max_offset + 2;
    let score = |d: f64| line_agreement(mean, w, h, d, margin);
    let m = max_offset as isize;
    let best = (-m..=m)
        .max_by(|&a, &b| score(a as f64).total_cmp(&score(b as f64)))
        .unwrap_or(0) as f64;
    super::rigid::golden_max(best - 1.0, best + 1.0, score)
}

fn mean_of(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

/// Resample the odd lines of `src` by `offset` into `out` (even lines copied).
pub fn correct(src: &[f32], w: usize, h: usize, offset: f64, out: &mut [f32]) {
    out.copy_from_slice(src);
    let mut row_tmp = vec![0.0f32; w];
    let mut row_out = vec![0.0f32; w];
    for y in (1..h).step_by(2) {
        row_tmp.copy_from_slice(&src[y * w..(y + 1) * w]);
        super::interp::shift_image(&row_tmp, w, 1, offset, 0.0, &mut vec![0.0; w], &mut row_out);
        out[y * w..(y + 1) * w].copy_from_slice(&row_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_known_line_offset() {
        let (w, h) = (64, 32);
        let truth = 1.4;
        let img: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, i / w);
                // Odd lines hold the pattern displaced by +truth.
                let xx = if y % 2 == 1 { x - truth } else { x };
                ((xx / 3.0).sin() * 50.0 + (xx / 7.3).cos() * 30.0 + (xx / 1.9 + 0.5).sin() * 20.0)
                    as f32
            })
            .collect();
        let est = estimate(&img, w, h, 4);
        assert!((est - truth).abs() < 0.1, "{est}");
        let mut fixed = vec![0.0; w * h];
        correct(&img, w, h, est, &mut fixed);
        assert!(estimate(&fixed, w, h, 4).abs() < 0.1);
    }
}
