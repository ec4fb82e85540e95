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
use super::anatomy::{Field, Scene, Soma};
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

/// A visible cell, prepared for rendering one session in its own coordinates.
struct Visible {
    index: usize,
    /// The soma in session-corrected coordinates.
    soma: Soma,
    extent: f64,
    brightness: f64,
    filled: bool,
    /// Nuclear-marker brightness (0 once the nucleus is lost).
    nuclear: f64,
}

/// Where each raw pixel of a frame looks in session-corrected coordinates.
enum Placement {
    /// Rigid motion only: `x = X − shift`.
    Shift { sx: f64, sy: f64 },
    /// Rigid + warp: per-pixel corrected coordinates.
    PerPixel { x: Vec<f32>, y: Vec<f32> },
}

impl Placement {
    #[inline]
    fn at(&self, i: usize, xx: usize, yy: usize) -> (f64, f64) {
        match self {
            Placement::Shift { sx, sy } => (xx as f64 - sx, yy as f64 - sy),
            Placement::PerPixel { x, y } => (x[i] as f64, y[i] as f64),
        }
    }
}

/// The static tissue fields resampled once per session onto its own corrected
/// grid (with a margin for motion), already multiplied by the vessel transmission
/// and scaled to photons.
struct SessionFields {
    vessels: Field,
    background: Field,
    neuropil: [Field; 2],
    structural_background: Option<Field>,
}

impl SessionFields {
    fn new(cfg: &SimConfig, scene: &Scene, transform: &DayTransform) -> Self {
        let margin = (cfg.motion_max_px
            + if cfg.nonrigid {
                4.0 * cfg.warp_sd_px
            } else {
                0.0
            }
            + 3.0)
            .ceil();
        let (gw, gh) = (
            cfg.width + 2 * margin as usize,
            cfg.height + 2 * margin as usize,
        );
        let p0 = cfg.photons_per_cell;
        let grid = |value: &dyn Fn(f64, f64) -> f64| -> Field {
            let mut data = Vec::with_capacity(gw * gh);
            for gy in 0..gh {
                for gx in 0..gw {
                    let (qx, qy) = transform.to_reference(gx as f64 - margin, gy as f64 - margin);
                    data.push(value(qx, qy) as f32);
                }
            }
            Field {
                x0: -margin,
                y0: -margin,
                width: gw,
                height: gh,
                data,
            }
        };
        let v = |qx: f64, qy: f64| scene.vessels.sample(qx, qy) as f64;
        let bg = |qx: f64, qy: f64| scene.background.sample(qx, qy) as f64;
        SessionFields {
            vessels: grid(&v),
            background: grid(&|qx, qy| v(qx, qy) * cfg.background_level * p0 * bg(qx, qy)),
            neuropil: [0, 1].map(|k| {
                grid(&|qx, qy| {
                    v(qx, qy)
                        * 0.5
                        * cfg.neuropil_level
                        * p0
                        * scene.neuropil[k].sample(qx, qy) as f64
                })
            }),
            structural_background: cfg
                .structural_channel
                .then(|| grid(&|qx, qy| v(qx, qy) * 0.1 * p0 * bg(qx, qy))),
        }
    }
}

/// Sample a session-grid field at every raw pixel. Rigid placements share one
/// set of bilinear weights, so the fast path is four multiply-adds per pixel.
fn sample_field(field: &Field, w: usize, h: usize, place: &Placement) -> Vec<f32> {
    if let Placement::Shift { sx, sy } = place {
        let (ox, oy) = (-sx - field.x0, -sy - field.y0);
        let (ix, iy) = (ox.floor(), oy.floor());
        let inside = ix >= 0.0
            && iy >= 0.0
            && ix as usize + w < field.width
            && iy as usize + h < field.height;
        if inside {
            let (ix, iy) = (ix as usize, iy as usize);
            let (fx, fy) = ((ox - ix as f64) as f32, (oy - iy as f64) as f32);
            let (w00, w01) = ((1.0 - fx) * (1.0 - fy), fx * (1.0 - fy));
            let (w10, w11) = ((1.0 - fx) * fy, fx * fy);
            let fw = field.width;
            let d = &field.data;
            let mut out = Vec::with_capacity(w * h);
            for yy in 0..h {
                let r0 = &d[(iy + yy) * fw + ix..(iy + yy) * fw + ix + w + 1];
                let r1 = &d[(iy + yy + 1) * fw + ix..(iy + yy + 1) * fw + ix + w + 1];
                for xx in 0..w {
                    out.push(w00 * r0[xx] + w01 * r0[xx + 1] + w10 * r1[xx] + w11 * r1[xx + 1]);
                }
            }
            return out;
        }
    }
    let mut out = Vec::with_capacity(w * h);
    for yy in 0..h {
        for xx in 0..w {
            let (x, y) = place.at(yy * w + xx, xx, yy);
            out.push(field.sample(x, y));
        }
    }
    out
}

/// Everything fixed while rendering one session.
pub struct SessionRenderer<'a> {
    pub cfg: &'a SimConfig,
    pub model: &'a DayModel,
    pub activity: &'a SessionActivity,
    pub motion: &'a Motion,
    pub transform: DayTransform,
    pub seed: u64,
    pub session_index: usize,
    visible: Vec<Visible>,
    fields: SessionFields,
}

/// One rendered frame: the functional channel and, optionally, the structural one.
pub struct Frame {
    pub functional: Vec<i16>,
    pub structural: Option<Vec<i16>>,
}

/// Supersampling offsets (2×2), px.
const SUB: [(f64, f64); 4] = [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)];

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
                Visible {
                    index: i,
                    soma: session_soma(cell, &transform),
                    extent: cell.extent(),
                    brightness: c.brightness,
                    filled: c.state == CellState::Filled,
                    nuclear: if c.state == CellState::Normal {
                        0.8 * cell.brightness
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        SessionRenderer {
            cfg,
            model,
            activity,
            motion,
            transform,
            seed,
            session_index,
            visible,
            fields: SessionFields::new(cfg, scene, &transform),
        }
    }

    /// Session-corrected coordinates imaged by every raw pixel of frame `f`.
    fn placement(&self, f: usize) -> Placement {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let (sx, sy) = (self.motion.shift_x[f] as f64, self.motion.shift_y[f] as f64);
        if self.motion.warp_x.is_empty() {
            return Placement::Shift { sx, sy };
        }
        let wx = dense_warp(&self.motion.warp_x[f], w, h);
        let wy = dense_warp(&self.motion.warp_y[f], w, h);
        let mut xs = vec![0f32; w * h];
        let mut ys = vec![0f32; w * h];
        for yy in 0..h {
            for xx in 0..w {
                // Solve x + d(x) = X by fixed-point iteration (d is smooth, |∇d| ≪ 1).
                let (x0, y0) = (xx as f64 - sx, yy as f64 - sy);
                let (mut x, mut y) = (x0, y0);
                for _ in 0..4 {
                    x = x0 - bilinear(&wx, w, h, x, y);
                    y = y0 - bilinear(&wy, w, h, x, y);
                }
                xs[yy * w + xx] = x as f32;
                ys[yy * w + xx] = y as f32;
            }
        }
        Placement::PerPixel { x: xs, y: ys }
    }

    /// Render frame `f`.
    pub fn frame(&self, f: usize) -> Frame {
        let cfg = self.cfg;
        let (w, h) = (cfg.width, cfg.height);
        let place = self.placement(f);
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
            let dff = self.activity.cells[v.index].dff[f] as f64;
            let amp = v.brightness * (1.0 + dff);
            let reach = v.extent + slack;
            let (cx, cy) = (v.soma.x + sx, v.soma.y + sy);
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
                    let (px, py) = place.at(i, xx, yy);
                    let mut p = 0.0;
                    let mut n = 0.0;
                    for &(ox, oy) in &SUB {
                        p += v.soma.profile(px + ox, py + oy, v.filled);
                        if nuclei.is_some() && v.nuclear > 0.0 {
                            n += v.soma.nucleus(px + ox, py + oy);
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
        let f_np = [self.activity.neuropil[0][f], self.activity.neuropil[1][f]];
        let fields = &self.fields;
        let mut np_grid = fields.neuropil[0].clone();
        for (a, b) in np_grid.data.iter_mut().zip(&fields.neuropil[1].data) {
            *a = *a * f_np[0] + *b * f_np[1];
        }
        let vessel = sample_field(&fields.vessels, w, h, &place);
        let background = sample_field(&fields.background, w, h, &place);
        let neuropil = sample_field(&np_grid, w, h, &place);
        let through_soma = (1.0 - cfg.neuropil_contamination) as f32;
        let scale = gain * bleach;
        let mut rng = stream(
            self.seed,
            Purpose::PixelNoise,
            self.session_index as u64,
            2 * f as u64,
        );
        let functional = (0..w * h)
            .map(|i| {
                let lambda = background[i]
                    + neuropil[i] * (1.0 - through_soma * cover[i])
                    + vessel[i] * soma[i];
                self.digitise(scale * lambda as f64, &mut rng)
            })
            .collect();
        let structural = nuclei.map(|nu| {
            let mut rng = stream(
                self.seed,
                Purpose::PixelNoise,
                self.session_index as u64,
                2 * f as u64 + 1,
            );
            let sbg = fields
                .structural_background
                .as_ref()
                .map(|g| sample_field(g, w, h, &place))
                .unwrap_or_else(|| vec![0.0; w * h]);
            (0..w * h)
                .map(|i| self.digitise(gain * (sbg[i] + vessel[i] * nu[i]) as f64, &mut rng))
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

/// A cell's soma in a session's corrected coordinates (the FOV transform is rigid,
/// so the soma keeps its shape and turns by the session's rotation).
fn session_soma(cell: &super::anatomy::Cell, transform: &DayTransform) -> Soma {
    let (x, y) = transform.to_session(cell.x, cell.y);
    cell.soma_at(x, y, cell.theta - transform.rotation_rad)
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
    let soma = session_soma(cell, transform);
    let (cx, cy) = (soma.x, soma.y);
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
            for &(ox, oy) in &SUB {
                p += 0.25 * soma.profile(x as f64 + ox, y as f64 + oy, filled);
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
