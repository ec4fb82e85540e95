//! Optics: the imaged frames, and the true footprints in session coordinates.
//!
//! For every raw pixel the renderer finds the tissue point it images: undo the
//! frame's motion (rigid shift, plus the warp by fixed-point inversion), then map
//! the session's corrected coordinates into reference coordinates through the
//! session's FOV transform (rotation about the frame centre, then translation).
//! Somata are evaluated analytically at that point (2×2 supersampling), so sub-pixel
//! motion needs no image interpolation; the smooth fields are sampled bilinearly.
//! Expected photons = global gain × bleaching × vessel transmission × (background +
//! neuropil seen through the soma + soma fluorescence); the detector adds Poisson
//! shot noise, gain, offset and Gaussian read noise, and stores int16 like ScanImage.

use super::activity::{poisson, SessionActivity};
use super::anatomy::Scene;
use super::config::SimConfig;
use super::motion::{dense_warp, Motion};
use super::rng::{stream, Purpose};
use super::tuning::{CellState, DayModel};
use rand::Rng;
use rand_distr::StandardNormal;

/// A session's field-of-view placement relative to the reference session:
/// `ref = R(θ)·(x − c) + c + (dx, dy)`, with `c` the frame centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayTransform {
    pub dx: f64,
    pub dy: f64,
    pub rotation_rad: f64,
    pub cx: f64,
    pub cy: f64,
}

impl DayTransform {
    /// The identity for a `width × height` frame.
    pub fn identity(width: usize, height: usize) -> Self {
        DayTransform {
            dx: 0.0,
            dy: 0.0,
            rotation_rad: 0.0,
            cx: (width as f64 - 1.0) / 2.0,
            cy: (height as f64 - 1.0) / 2.0,
        }
    }

    /// Session-corrected coordinates → reference coordinates.
    #[inline]
    pub fn to_reference(&self, x: f64, y: f64) -> (f64, f64) {
        let (s, c) = self.rotation_rad.sin_cos();
        let (u, v) = (x - self.cx, y - self.cy);
        (
            c * u - s * v + self.cx + self.dx,
            s * u + c * v + self.cy + self.dy,
        )
    }

    /// Reference coordinates → session-corrected coordinates.
    pub fn to_session(&self, qx: f64, qy: f64) -> (f64, f64) {
        let (s, c) = self.rotation_rad.sin_cos();
        let (u, v) = (qx - self.cx - self.dx, qy - self.cy - self.dy);
        (c * u + s * v + self.cx, -s * u + c * v + self.cy)
    }
}

/// A visible cell, prepared for rendering one session.
struct Visible {
    index: usize,
    /// Centre in session-corrected coordinates.
    x: f64,
    y: f64,
    brightness: f64,
    filled: bool,
    /// Nuclear-marker brightness (0 once the nucleus is lost).
    nuclear: f64,
}

/// Everything fixed while rendering one session.
pub struct SessionRenderer<'a> {
    pub cfg: &'a SimConfig,
    pub scene: &'a Scene,
    pub model: &'a DayModel,
    pub activity: &'a SessionActivity,
    pub motion: &'a Motion,
    pub transform: DayTransform,
    pub seed: u64,
    pub session_index: usize,
    visible: Vec<Visible>,
    /// Tissue-space offsets of the 2×2 supersampling points.
    sub: [(f64, f64); 4],
}

/// One rendered frame: the functional channel and, optionally, the structural one.
pub struct Frame {
    pub functional: Vec<i16>,
    pub structural: Option<Vec<i16>>,
}

impl<'a> SessionRenderer<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a SimConfig,
        scene: &'a Scene,
        model: &'a DayModel,
        activity: &'a SessionActivity,
        motion: &'a Motion,
        transform: DayTransform,
        seed: u64,
        session_index: usize,
    ) -> Self {
        let visible = model
            .cells
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.state, CellState::Normal | CellState::Filled))
            .map(|(i, c)| {
                let cell = &scene.cells[i];
                let (x, y) = transform.to_session(cell.x, cell.y);
                Visible {
                    index: i,
                    x,
                    y,
                    brightness: c.brightness,
                    filled: c.state == CellState::Filled,
                    nuclear: if c.state == CellState::Normal {
                        0.8 * cfg.photons_per_cell * cell.brightness
                            / cfg.photons_per_cell.max(1e-9)
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        let (s, c) = transform.rotation_rad.sin_cos();
        let rot = |u: f64, v: f64| (c * u - s * v, s * u + c * v);
        let sub = [
            rot(-0.25, -0.25),
            rot(0.25, -0.25),
            rot(-0.25, 0.25),
            rot(0.25, 0.25),
        ];
        SessionRenderer {
            cfg,
            scene,
            model,
            activity,
            motion,
            transform,
            seed,
            session_index,
            visible,
            sub,
        }
    }

    /// Tissue coordinates imaged by every raw pixel of frame `f`.
    fn tissue_map(&self, f: usize) -> (Vec<f32>, Vec<f32>) {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let (sx, sy) = (self.motion.shift_x[f] as f64, self.motion.shift_y[f] as f64);
        let warp = (!self.motion.warp_x.is_empty()).then(|| {
            (
                dense_warp(&self.motion.warp_x[f], w, h),
                dense_warp(&self.motion.warp_y[f], w, h),
            )
        });
        let mut qx = vec![0f32; w * h];
        let mut qy = vec![0f32; w * h];
        for yy in 0..h {
            for xx in 0..w {
                let (mut x, mut y) = (xx as f64 - sx, yy as f64 - sy);
                if let Some((wx, wy)) = &warp {
                    // Solve x + d(x) = X by fixed-point iteration (d is smooth, |∇d| ≪ 1).
                    let (x0, y0) = (x, y);
                    for _ in 0..4 {
                        x = x0 - bilinear(wx, w, h, x, y);
                        y = y0 - bilinear(wy, w, h, x, y);
                    }
                }
                let (a, b) = self.transform.to_reference(x, y);
                qx[yy * w + xx] = a as f32;
                qy[yy * w + xx] = b as f32;
            }
        }
        (qx, qy)
    }

    /// Render frame `f`.
    pub fn frame(&self, f: usize) -> Frame {
        let cfg = self.cfg;
        let (w, h) = (cfg.width, cfg.height);
        let (qx, qy) = self.tissue_map(f);
        let mut soma = vec![0f32; w * h];
        let mut cover = vec![0f32; w * h];
        let mut nuclei = cfg.structural_channel.then(|| vec![0f32; w * h]);
        let (sx, sy) = (self.motion.shift_x[f] as f64, self.motion.shift_y[f] as f64);
        let slack = 2.0
            + if self.motion.warp_x.is_empty() {
                0.0
            } else {
                4.0 * cfg.warp_sd_px
            };
        for v in &self.visible {
            let cell = &self.scene.cells[v.index];
            let dff = self.activity.cells[v.index].dff[f] as f64;
            let amp = v.brightness * (1.0 + dff);
            let reach = cell.extent() + slack;
            let (cx, cy) = (v.x + sx, v.y + sy);
            let x0 = (cx - reach).floor().max(0.0) as usize;
            let y0 = (cy - reach).floor().max(0.0) as usize;
            let x1 = ((cx + reach).ceil() as isize).min(w as isize - 1);
            let y1 = ((cy + reach).ceil() as isize).min(h as isize - 1);
            if x1 < 0 || y1 < 0 {
                continue;
            }
            for yy in y0..=y1 as usize {
                for xx in x0..=x1 as usize {
                    let i = yy * w + xx;
                    let (px, py) = (qx[i] as f64, qy[i] as f64);
                    let mut p = 0.0;
                    let mut n = 0.0;
                    for &(ox, oy) in &self.sub {
                        p += cell.profile(px + ox, py + oy, v.filled);
                        if nuclei.is_some() && v.nuclear > 0.0 {
                            n += cell.nucleus(px + ox, py + oy);
                        }
                    }
                    p *= 0.25;
                    if p > 0.0 {
                        soma[i] += (amp * p) as f32;
                        cover[i] = cover[i].max(p as f32);
                    }
                    if let Some(nu) = nuclei.as_mut() {
                        nu[i] += (0.25 * n * v.nuclear) as f32;
                    }
                }
            }
        }
        let t = f as f64 / cfg.fs;
        let bleach = 1.0 - cfg.bleach_fraction * (1.0 - (-t / cfg.bleach_tau_s).exp());
        let gain = self.model.global_gain;
        let np = [
            self.activity.neuropil[0][f] as f64,
            self.activity.neuropil[1][f] as f64,
        ];
        let p0 = cfg.photons_per_cell;
        let through_soma = 1.0 - cfg.neuropil_contamination;
        let mut rng = stream(
            self.seed,
            Purpose::PixelNoise,
            self.session_index as u64,
            2 * f as u64,
        );
        let mut functional = vec![0i16; w * h];
        for i in 0..w * h {
            let (px, py) = (qx[i] as f64, qy[i] as f64);
            let s = self.scene;
            let neuropil = 0.5
                * (s.neuropil[0].sample(px, py) as f64 * np[0]
                    + s.neuropil[1].sample(px, py) as f64 * np[1]);
            let lambda = gain
                * bleach
                * s.vessels.sample(px, py) as f64
                * (cfg.background_level * p0 * s.background.sample(px, py) as f64
                    + cfg.neuropil_level * p0 * neuropil * (1.0 - through_soma * cover[i] as f64)
                    + soma[i] as f64);
            functional[i] = self.digitise(lambda, &mut rng);
        }
        let structural = nuclei.map(|nu| {
            let mut rng = stream(
                self.seed,
                Purpose::PixelNoise,
                self.session_index as u64,
                2 * f as u64 + 1,
            );
            (0..w * h)
                .map(|i| {
                    let (px, py) = (qx[i] as f64, qy[i] as f64);
                    let s = self.scene;
                    let lambda = gain
                        * s.vessels.sample(px, py) as f64
                        * (0.1 * p0 * s.background.sample(px, py) as f64 + nu[i] as f64);
                    self.digitise(lambda, &mut rng)
                })
                .collect()
        });
        Frame {
            functional,
            structural,
        }
    }

    /// Detector: Poisson photons, gain, offset, read noise, int16 saturation.
    #[inline]
    fn digitise(&self, lambda: f64, rng: &mut impl Rng) -> i16 {
        let cfg = self.cfg;
        let photons = poisson(lambda, rng) as f64;
        let read: f64 = rng.sample(StandardNormal);
        let v = cfg.offset_adu + cfg.gain_adu * photons + cfg.read_noise_adu * read;
        v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
    }
}

/// Bilinear sample of a row-major image at (x, y), clamped at the border.
#[inline]
fn bilinear(img: &[f32], w: usize, h: usize, x: f64, y: f64) -> f64 {
    let gx = x.clamp(0.0, (w - 1) as f64);
    let gy = y.clamp(0.0, (h - 1) as f64);
    let ix = (gx as usize).min(w - 2);
    let iy = (gy as usize).min(h - 2);
    let (fx, fy) = (gx - ix as f64, gy - iy as f64);
    let i = iy * w + ix;
    let top = img[i] as f64 * (1.0 - fx) + img[i + 1] as f64 * fx;
    let bottom = img[i + w] as f64 * (1.0 - fx) + img[i + w + 1] as f64 * fx;
    top * (1.0 - fy) + bottom * fy
}

/// True footprint of a cell in session-corrected coordinates: pixel indices and
/// GCaMP profile weights (2×2 supersampled), weights below 0.02 dropped.
pub fn footprint(
    cfg: &SimConfig,
    scene: &Scene,
    cell_index: usize,
    filled: bool,
    transform: &DayTransform,
) -> (Vec<u32>, Vec<f32>) {
    let cell = &scene.cells[cell_index];
    let (cx, cy) = transform.to_session(cell.x, cell.y);
    let reach = cell.extent() + 1.0;
    let (w, h) = (cfg.width as isize, cfg.height as isize);
    let x0 = ((cx - reach).floor() as isize).max(0);
    let y0 = ((cy - reach).floor() as isize).max(0);
    let x1 = ((cx + reach).ceil() as isize).min(w - 1);
    let y1 = ((cy + reach).ceil() as isize).min(h - 1);
    let mut pixels = Vec::new();
    let mut weights = Vec::new();
    for y in y0..=y1 {
        for x in x0..=x1 {
            let mut p = 0.0;
            for (ox, oy) in [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)] {
                let (qx, qy) = transform.to_reference(x as f64 + ox, y as f64 + oy);
                p += 0.25 * cell.profile(qx, qy, filled);
            }
            if p >= 0.02 {
                pixels.push((y * w + x) as u32);
                weights.push(p as f32);
            }
        }
    }
    (pixels, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_transform_round_trips() {
        let t = DayTransform {
            dx: 3.0,
            dy: -2.0,
            rotation_rad: 0.03,
            cx: 255.5,
            cy: 255.5,
        };
        let (qx, qy) = t.to_reference(10.0, 400.0);
        let (x, y) = t.to_session(qx, qy);
        assert!((x - 10.0).abs() < 1e-9 && (y - 400.0).abs() < 1e-9);
        let id = DayTransform::identity(512, 512);
        assert_eq!(id.to_reference(7.0, 9.0), (7.0, 9.0));
    }
}
