//! Neuropil masks: for each ROI an annulus around it that excludes every ROI's
//! pixels (and a gap around them), grown until it holds enough pixels, as Suite2p
//! builds its neuropil masks.

use crate::imgproc::Rect;

/// Every ROI's pixels, dilated by `gap` px (a square neighbourhood).
pub fn forbidden_mask(rois: &[&[u32]], width: usize, height: usize, gap: f64) -> Vec<bool> {
    let mut m = vec![false; width * height];
    let g = gap.round().max(0.0) as isize;
    for pixels in rois {
        for &p in pixels.iter() {
            let (x, y) = ((p as usize % width) as isize, (p as usize / width) as isize);
            for dy in -g..=g {
                for dx in -g..=g {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height {
                        m[ny as usize * width + nx as usize] = true;
                    }
                }
            }
        }
    }
    m
}

/// The annulus of one ROI centred at (cx, cy) with `npix` pixels: free pixels of the
/// valid box at distance ≥ the ROI's equivalent radius + `gap`, out to the smallest
/// radius that gives `min_pixels` (or as many as the frame allows).
#[allow(clippy::too_many_arguments)]
pub fn annulus(
    (cx, cy): (f64, f64),
    npix: usize,
    forbidden: &[bool],
    width: usize,
    valid: Rect,
    gap: f64,
    min_pixels: usize,
) -> Vec<u32> {
    let r_in = (npix as f64 / std::f64::consts::PI).sqrt() + gap;
    let mut r_out = r_in + 3.0;
    let r_max = r_in + (valid.width().max(valid.height())) as f64;
    loop {
        let ring = ring_pixels((cx, cy), r_in, r_out, forbidden, width, valid);
        if ring.len() >= min_pixels || r_out >= r_max {
            return ring;
        }
        // Grow by the radius that would add the missing pixels in free space.
        let missing = (min_pixels - ring.len()) as f64;
        let step = (missing / (2.0 * std::f64::consts::PI * r_out)).max(1.0);
        r_out = (r_out + step).min(r_max);
    }
}

fn ring_pixels(
    (cx, cy): (f64, f64),
    r_in: f64,
    r_out: f64,
    forbidden: &[bool],
    width: usize,
    valid: Rect,
) -> Vec<u32> {
    let x0 = ((cx - r_out).floor().max(valid.x0 as f64)) as usize;
    let x1 = ((cx + r_out).ceil() as usize + 1).min(valid.x1);
    let y0 = ((cy - r_out).floor().max(valid.y0 as f64)) as usize;
    let y1 = ((cy + r_out).ceil() as usize + 1).min(valid.y1);
    let mut out = Vec::new();
    for y in y0..y1 {
        for x in x0..x1 {
            let d = (x as f64 - cx).hypot(y as f64 - cy);
            let p = y * width + x;
            if d >= r_in && d <= r_out && !forbidden[p] {
                out.push(p as u32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annulus_avoids_cells_and_reaches_its_size() {
        let (w, h) = (100, 100);
        let cell: Vec<u32> = (0..w * h)
            .filter(|p| ((p % w) as f64 - 50.0).hypot((p / w) as f64 - 50.0) <= 5.0)
            .map(|p| p as u32)
            .collect();
        let other: Vec<u32> = (0..w * h)
            .filter(|p| ((p % w) as f64 - 62.0).hypot((p / w) as f64 - 50.0) <= 4.0)
            .map(|p| p as u32)
            .collect();
        let forbidden = forbidden_mask(&[&cell, &other], w, h, 2.0);
        let valid = Rect {
            x0: 0,
            x1: w,
            y0: 0,
            y1: h,
        };
        let ring = annulus((50.0, 50.0), cell.len(), &forbidden, w, valid, 2.0, 350);
        assert!(ring.len() >= 350);
        assert!(ring
            .iter()
            .all(|&p| !cell.contains(&p) && !other.contains(&p)));
        let max_d = ring
            .iter()
            .map(|&p| ((p as usize % w) as f64 - 50.0).hypot((p as usize / w) as f64 - 50.0))
            .fold(0.0, f64::max);
        assert!(max_d < 20.0, "ring reaches {max_d} px");
    }

    #[test]
    fn annulus_stops_at_the_frame() {
        let forbidden = vec![false; 20 * 20];
        let valid = Rect {
            x0: 0,
            x1: 20,
            y0: 0,
            y1: 20,
        };
        let ring = annulus((10.0, 10.0), 10, &forbidden, 20, valid, 1.0, 100_000);
        assert!(!ring.is_empty() && ring.len() < 400);
    }
}
