//! Small image filters shared by the simulator and the detection stage.
//!
//! In: images as row-major `f32` slices (`y * width + x`), or pixel-major stacks
//! (one contiguous time series per pixel). Out: filtered copies. Edges are clamped
//! (the nearest pixel is repeated), so a constant image stays constant.

/// A normalised Gaussian kernel of s.d. `sigma` and radius ⌈3σ⌉ (a single 1 for σ ≤ 0).
pub fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    if !(sigma > 0.0) {
        return vec![1.0];
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f64 = kernel.iter().sum();
    kernel.iter().map(|k| (k / norm) as f32).collect()
}

fn clamp_index(v: isize, n: usize) -> usize {
    v.clamp(0, n as isize - 1) as usize
}

/// Separable Gaussian blur of a width×height image, edges clamped.
pub fn gaussian_blur(data: &[f32], width: usize, height: usize, sigma: f64) -> Vec<f32> {
    let kernel = gaussian_kernel(sigma);
    let radius = (kernel.len() / 2) as isize;
    let mut tmp = vec![0f32; data.len()];
    for y in 0..height {
        let row = &data[y * width..(y + 1) * width];
        for x in 0..width {
            let mut acc = 0f32;
            for (k, &w) in kernel.iter().enumerate() {
                acc += w * row[clamp_index(x as isize + k as isize - radius, width)];
            }
            tmp[y * width + x] = acc;
        }
    }
    let mut out = vec![0f32; data.len()];
    for y in 0..height {
        for (k, &w) in kernel.iter().enumerate() {
            let sy = clamp_index(y as isize + k as isize - radius, height);
            let src = &tmp[sy * width..(sy + 1) * width];
            let dst = &mut out[y * width..(y + 1) * width];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += w * s;
            }
        }
    }
    out
}

/// The pixels (x, y) of `bounds` within `radius` of (cx, cy), row by row; none for a
/// negative or NaN radius.
pub fn disc_pixels(
    (cx, cy): (isize, isize),
    radius: f64,
    bounds: Rect,
) -> impl Iterator<Item = (usize, usize)> {
    // r = −1 makes both ranges empty.
    let r = if radius >= 0.0 {
        radius.ceil() as isize
    } else {
        -1
    };
    (-r..=r).flat_map(move |dy| {
        (-r..=r).filter_map(move |dx| {
            let (x, y) = (cx + dx, cy + dy);
            ((dx * dx + dy * dy) as f64 <= radius * radius && bounds.contains(x, y))
                .then_some((x as usize, y as usize))
        })
    })
}

/// A rectangle of pixels `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x0: usize,
    pub x1: usize,
    pub y0: usize,
    pub y1: usize,
}

impl Rect {
    /// The whole `width` × `height` frame.
    pub fn frame(width: usize, height: usize) -> Rect {
        Rect {
            x0: 0,
            x1: width,
            y0: 0,
            y1: height,
        }
    }

    /// Whether pixel (x, y) lies inside.
    pub fn contains(self, x: isize, y: isize) -> bool {
        x >= self.x0 as isize
            && y >= self.y0 as isize
            && x < self.x1 as isize
            && y < self.y1 as isize
    }

    /// The square of half-side `half` around (cx, cy), clipped to the frame.
    pub fn around(cx: usize, cy: usize, half: usize, width: usize, height: usize) -> Rect {
        Rect {
            x0: cx.saturating_sub(half),
            x1: (cx + half + 1).min(width),
            y0: cy.saturating_sub(half),
            y1: (cy + half + 1).min(height),
        }
    }

    /// The rectangle grown by `m` on every side, clipped to the frame.
    pub fn grow(self, m: usize, width: usize, height: usize) -> Rect {
        Rect {
            x0: self.x0.saturating_sub(m),
            x1: (self.x1 + m).min(width),
            y0: self.y0.saturating_sub(m),
            y1: (self.y1 + m).min(height),
        }
    }

    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// Gaussian blur of a pixel-major stack (`stack[p * t_len .. (p + 1) * t_len]` is
/// pixel p's series) restricted to `out_rect`: returns the blurred series of the
/// pixels of `out_rect`, row by row. Source pixels outside the frame are clamped, as
/// in [`gaussian_blur`]. Working on whole series keeps the inner loops contiguous.
pub fn blur_stack_rect(
    stack: &[f32],
    t_len: usize,
    width: usize,
    height: usize,
    kernel: &[f32],
    out_rect: Rect,
) -> Vec<f32> {
    let radius = (kernel.len() / 2) as isize;
    // Rows the vertical pass needs, blurred horizontally first.
    let src_rows = out_rect.grow(kernel.len() / 2, width, height);
    let (rw, rh) = (out_rect.width(), src_rows.height());
    let mut horiz = vec![0f32; rw * rh * t_len];
    for (ry, y) in (src_rows.y0..src_rows.y1).enumerate() {
        for (rx, x) in (out_rect.x0..out_rect.x1).enumerate() {
            let dst = &mut horiz[(ry * rw + rx) * t_len..(ry * rw + rx + 1) * t_len];
            for (k, &w) in kernel.iter().enumerate() {
                let sx = clamp_index(x as isize + k as isize - radius, width);
                let p = y * width + sx;
                axpy(dst, w, &stack[p * t_len..(p + 1) * t_len]);
            }
        }
    }
    let mut out = vec![0f32; rw * out_rect.height() * t_len];
    for (oy, y) in (out_rect.y0..out_rect.y1).enumerate() {
        for rx in 0..rw {
            let dst = &mut out[(oy * rw + rx) * t_len..(oy * rw + rx + 1) * t_len];
            for (k, &w) in kernel.iter().enumerate() {
                let sy = clamp_index(y as isize + k as isize - radius, height);
                let ry = sy - src_rows.y0;
                axpy(
                    dst,
                    w,
                    &horiz[(ry * rw + rx) * t_len..(ry * rw + rx + 1) * t_len],
                );
            }
        }
    }
    out
}

/// `dst += w · src`.
pub fn axpy(dst: &mut [f32], w: f32, src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += w * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_preserves_constant_and_mean() {
        let data: Vec<f32> = (0..600).map(|i| ((i * 7) % 13) as f32).collect();
        let b = gaussian_blur(&data, 30, 20, 3.0);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&b) - mean(&data)).abs() < 0.3);
        let flat = gaussian_blur(&[2.5; 100], 10, 10, 1.5);
        assert!(flat.iter().all(|&v| (v - 2.5).abs() < 1e-5));
    }

    #[test]
    fn stack_blur_matches_image_blur_frame_by_frame() {
        let (w, h, t) = (13, 11, 3);
        let frames: Vec<Vec<f32>> = (0..t)
            .map(|k| (0..w * h).map(|i| ((i * (k + 3)) % 17) as f32).collect())
            .collect();
        let mut stack = vec![0f32; w * h * t];
        for (k, f) in frames.iter().enumerate() {
            for p in 0..w * h {
                stack[p * t + k] = f[p];
            }
        }
        let kernel = gaussian_kernel(1.3);
        let rect = Rect {
            x0: 2,
            x1: 9,
            y0: 0,
            y1: 7,
        };
        let got = blur_stack_rect(&stack, t, w, h, &kernel, rect);
        for (k, f) in frames.iter().enumerate() {
            let want = gaussian_blur(f, w, h, 1.3);
            for (oy, y) in (rect.y0..rect.y1).enumerate() {
                for (ox, x) in (rect.x0..rect.x1).enumerate() {
                    let g = got[(oy * rect.width() + ox) * t + k];
                    assert!((g - want[y * w + x]).abs() < 1e-4, "({x},{y},{k})");
                }
            }
        }
    }

    #[test]
    fn zero_sigma_kernel_is_identity() {
        assert_eq!(gaussian_kernel(0.0), vec![1.0]);
    }

    #[test]
    fn disc_pixels_row_by_row_inside_the_bounds() {
        let all: Vec<_> = disc_pixels((2, 2), 1.0, Rect::frame(10, 10)).collect();
        assert_eq!(all, vec![(2, 1), (1, 2), (2, 2), (3, 2), (2, 3)]);
        let clipped: Vec<_> = disc_pixels((0, 0), 1.5, Rect::frame(10, 10)).collect();
        assert_eq!(clipped, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
        assert_eq!(disc_pixels((5, 5), 0.0, Rect::frame(10, 10)).count(), 1);
        assert_eq!(disc_pixels((5, 5), -2.0, Rect::frame(10, 10)).count(), 0);
        assert_eq!(
            disc_pixels((5, 5), f64::NAN, Rect::frame(10, 10)).count(),
            0
        );
        assert_eq!(disc_pixels((-5, 5), 2.0, Rect::frame(10, 10)).count(), 0);
    }
}
