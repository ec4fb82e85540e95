//! The tissue: somata, neuropil, background and blood vessels.
//!
//! Positions are in tissue coordinates, which are the reference session's
//! motion-corrected pixel coordinates (x = column, y = row). A soma is an ellipse
//! with a soft edge and a dim nucleus (GCaMP is excluded from the nucleus, so
//! somata look like rings); the structural channel sees the filled nucleus
//! (H2B-mCherry). Smooth random fields (Gaussian-filtered white noise) give the
//! neuropil's spatial pattern and the background; vessels are dark curved bands.

use super::config::SimConfig;
use super::rng::{stream, Purpose};
use rand::Rng;
use rand_distr::{Distribution, LogNormal, StandardNormal};

/// One neuron's anatomy.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Centre in tissue (reference) coordinates, px.
    pub x: f64,
    pub y: f64,
    /// Semi-axes (px) and orientation (rad) of the soma ellipse.
    pub a: f64,
    pub b: f64,
    pub theta: f64,
    /// Nucleus radius as a fraction of the soma's, and its GCaMP level (0..1).
    pub nucleus_frac: f64,
    pub nucleus_level: f64,
    /// Interneuron (mDlx-tagBFP⁺ in the paper).
    pub inhibitory: bool,
    /// Resting brightness, photons per pixel per frame, before day effects.
    pub brightness: f64,
}

/// Width of the soft soma edge, px.
const EDGE_PX: f64 = 0.8;

impl Cell {
    /// Mean radius, px.
    pub fn radius(&self) -> f64 {
        (self.a * self.b).sqrt()
    }

    /// Largest distance from the centre at which the profile is non-zero, px.
    pub fn extent(&self) -> f64 {
        self.a.max(self.b) + EDGE_PX
    }

    /// This soma's shape placed at (x, y) with orientation `theta`: used to draw it
    /// in a session's own coordinates (a rigid transform of the tissue).
    pub fn soma_at(&self, x: f64, y: f64, theta: f64) -> Soma {
        let (sin, cos) = theta.sin_cos();
        Soma {
            x,
            y,
            cos,
            sin,
            inv_a: 1.0 / self.a,
            inv_b: 1.0 / self.b,
            ramp_scale: self.radius() / EDGE_PX,
            nucleus_frac: self.nucleus_frac,
            nucleus_level: self.nucleus_level,
        }
    }

    /// The soma in tissue coordinates.
    pub fn soma(&self) -> Soma {
        self.soma_at(self.x, self.y, self.theta)
    }

    /// GCaMP profile at a tissue point (see [`Soma::profile`]).
    pub fn profile(&self, qx: f64, qy: f64, filled: bool) -> f64 {
        self.soma().profile(qx, qy, filled)
    }

    /// Nuclear-marker profile at a tissue point (see [`Soma::nucleus`]).
    pub fn nucleus(&self, qx: f64, qy: f64) -> f64 {
        self.soma().nucleus(qx, qy)
    }
}

/// A soma's shape at a position, with its trigonometry cached for rendering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Soma {
    pub x: f64,
    pub y: f64,
    cos: f64,
    sin: f64,
    inv_a: f64,
    inv_b: f64,
    /// Radius over the edge width: converts radius units to edge ramps.
    ramp_scale: f64,
    nucleus_frac: f64,
    nucleus_level: f64,
}

impl Soma {
    /// Normalised elliptical radius of point (px, py): 1 on the soma edge.
    #[inline]
    fn rho(&self, px: f64, py: f64) -> f64 {
        let dx = px - self.x;
        let dy = py - self.y;
        let u = (dx * self.cos + dy * self.sin) * self.inv_a;
        let v = (dy * self.cos - dx * self.sin) * self.inv_b;
        (u * u + v * v).sqrt()
    }

    #[inline]
    fn ramp(&self, inside_by: f64) -> f64 {
        // inside_by is in units of the radius; the ramp is EDGE_PX wide in pixels.
        (inside_by * self.ramp_scale + 0.5).clamp(0.0, 1.0)
    }

    /// GCaMP profile: ~1 in the cytoplasm ring, `nucleus_level` in the nucleus, 0
    /// outside. A `filled` soma (a dying, ablated cell that kept its GCaMP) has no
    /// nuclear dip.
    #[inline]
    pub fn profile(&self, px: f64, py: f64, filled: bool) -> f64 {
        let rho = self.rho(px, py);
        let soma = self.ramp(1.0 - rho);
        if soma == 0.0 || filled {
            return soma;
        }
        let nucleus = self.ramp(self.nucleus_frac - rho);
        soma * (1.0 - (1.0 - self.nucleus_level) * nucleus)
    }

    /// Nuclear-marker profile: the filled nucleus.
    #[inline]
    pub fn nucleus(&self, px: f64, py: f64) -> f64 {
        self.ramp(self.nucleus_frac - self.rho(px, py))
    }
}

/// A scalar field on a regular grid in tissue coordinates, sampled bilinearly.
#[derive(Debug, Clone)]
pub struct Field {
    /// Tissue coordinates of grid sample (0, 0).
    pub x0: f64,
    pub y0: f64,
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Field {
    fn constant(x0: f64, y0: f64, width: usize, height: usize, v: f32) -> Self {
        Field {
            x0,
            y0,
            width,
            height,
            data: vec![v; width * height],
        }
    }

    /// Bilinear sample at a tissue point; clamped at the grid's border.
    #[inline]
    pub fn sample(&self, qx: f64, qy: f64) -> f32 {
        let gx = (qx - self.x0).clamp(0.0, (self.width - 1) as f64);
        let gy = (qy - self.y0).clamp(0.0, (self.height - 1) as f64);
        let ix = (gx as usize).min(self.width - 2);
        let iy = (gy as usize).min(self.height - 2);
        let fx = (gx - ix as f64) as f32;
        let fy = (gy - iy as f64) as f32;
        let i = iy * self.width + ix;
        let d = &self.data;
        let top = d[i] + (d[i + 1] - d[i]) * fx;
        let bottom = d[i + self.width] + (d[i + self.width + 1] - d[i + self.width]) * fx;
        top + (bottom - top) * fy
    }

    fn mean_sd(&self) -> (f64, f64) {
        let n = self.data.len() as f64;
        let mean = self.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    /// Rescale to the given mean and s.d., then clamp below at `floor`.
    fn standardise(&mut self, mean: f64, sd: f64, floor: f64) {
        let (m, s) = self.mean_sd();
        let s = if s > 0.0 { s } else { 1.0 };
        for v in &mut self.data {
            *v = ((mean + (*v as f64 - m) / s * sd).max(floor)) as f32;
        }
    }
}

/// Everything static in the tissue.
#[derive(Debug, Clone)]
pub struct Scene {
    pub cells: Vec<Cell>,
    /// Autofluorescence / out-of-focus background, relative units (mean 1).
    pub background: Field,
    /// Two neuropil spatial components, relative units (mean 1).
    pub neuropil: [Field; 2],
    /// Vessel transmission (1 = clear, lower over a vessel).
    pub vessels: Field,
    /// Margin (px) of the fields around the frame.
    pub margin: f64,
}

pub use crate::imgproc::gaussian_blur;

/// How far (px) the imaged window can wander from the reference frame.
fn field_margin(cfg: &SimConfig) -> f64 {
    let half_diag = 0.5 * ((cfg.width.pow(2) + cfg.height.pow(2)) as f64).sqrt();
    let rot = (4.0 * cfg.day_rotation_sd_deg).to_radians().min(0.5);
    4.0 * cfg.day_shift_sd_px + cfg.motion_max_px + 3.0 * cfg.warp_sd_px + half_diag * rot + 8.0
}

fn random_field(cfg: &SimConfig, seed: u64, which: u64, sigma: f64, margin: f64) -> Field {
    let w = cfg.width + 2 * margin as usize;
    let h = cfg.height + 2 * margin as usize;
    let mut rng = stream(seed, Purpose::Fields, which, 0);
    let noise: Vec<f32> = (0..w * h)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect();
    Field {
        x0: -margin,
        y0: -margin,
        width: w,
        height: h,
        data: gaussian_blur(&noise, w, h, sigma),
    }
}

/// Place cells by rejection sampling with a soft exclusion distance, so somata
/// pack densely and a few overlap, as in L2/3.
fn place_cells(cfg: &SimConfig, seed: u64) -> Vec<Cell> {
    let mut rng = stream(seed, Purpose::Anatomy, 0, 0);
    let r0 = cfg.cell_radius_px;
    let brightness = LogNormal::new(cfg.photons_per_cell.ln(), 0.35).expect("valid lognormal");
    let n_inh = (cfg.inhibitory_fraction * cfg.n_cells as f64).round() as usize;
    let mut cells: Vec<Cell> = Vec::with_capacity(cfg.n_cells);
    let mut attempts = 0usize;
    while cells.len() < cfg.n_cells && attempts < 500 * cfg.n_cells {
        attempts += 1;
        let r = r0 * (0.12 * rng.sample::<f64, _>(StandardNormal)).exp();
        let x = rng.random_range(-0.3 * r..cfg.width as f64 - 1.0 + 0.3 * r);
        let y = rng.random_range(-0.3 * r..cfg.height as f64 - 1.0 + 0.3 * r);
        let too_close = cells.iter().any(|c| {
            let d2 = (c.x - x).powi(2) + (c.y - y).powi(2);
            d2 < (0.8 * (c.radius() + r)).powi(2)
        });
        if too_close {
            continue;
        }
        let e = rng.random_range(0.0..0.3);
        cells.push(Cell {
            x,
            y,
            a: r * (1.0 + e),
            b: r / (1.0 + e),
            theta: rng.random_range(0.0..std::f64::consts::PI),
            nucleus_frac: rng.random_range(0.45..0.6),
            nucleus_level: rng.random_range(0.15..0.35),
            inhibitory: false,
            brightness: brightness.sample(&mut rng),
        });
    }
    // Choose interneurons at random among the placed cells (exact count).
    let mut idx: Vec<usize> = (0..cells.len()).collect();
    rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
    for &i in idx.iter().take(n_inh.min(cells.len())) {
        cells[i].inhibitory = true;
        // Interneurons are somewhat dimmer on average.
        cells[i].brightness *= 0.8;
    }
    cells
}

/// Dark vessel bands: quadratic Bézier curves across the field.
fn vessel_field(cfg: &SimConfig, seed: u64, margin: f64) -> Field {
    let w = cfg.width + 2 * margin as usize;
    let h = cfg.height + 2 * margin as usize;
    let mut f = Field::constant(-margin, -margin, w, h, 1.0);
    let mut rng = stream(seed, Purpose::Fields, 100, 0);
    let area_units = (cfg.width * cfg.height) as f64 / (512.0 * 512.0);
    let n = ((3.0 * area_units).round() as usize).clamp(1, 12);
    let scale = cfg.cell_radius_px / 6.0;
    for _ in 0..n {
        let mut pt = || {
            (
                rng.random_range(-margin..cfg.width as f64 + margin),
                rng.random_range(-margin..cfg.height as f64 + margin),
            )
        };
        let (p0, p1, p2) = (pt(), pt(), pt());
        let width = rng.random_range(2.5..6.0) * scale;
        let depth = rng.random_range(0.35..0.6);
        let samples: Vec<(f64, f64)> = (0..=400)
            .map(|i| {
                let t = i as f64 / 400.0;
                let u = 1.0 - t;
                (
                    u * u * p0.0 + 2.0 * u * t * p1.0 + t * t * p2.0,
                    u * u * p0.1 + 2.0 * u * t * p1.1 + t * t * p2.1,
                )
            })
            .collect();
        let reach = 3.0 * width;
        for &(sx, sy) in samples.iter().step_by(1) {
            let gx0 = ((sx + margin - reach).floor().max(0.0)) as usize;
            let gy0 = ((sy + margin - reach).floor().max(0.0)) as usize;
            let gx1 = ((sx + margin + reach).ceil() as usize).min(w - 1);
            let gy1 = ((sy + margin + reach).ceil() as usize).min(h - 1);
            for gy in gy0..=gy1.max(gy0) {
                for gx in gx0..=gx1.max(gx0) {
                    let dx = gx as f64 - margin - sx;
                    let dy = gy as f64 - margin - sy;
                    let t = 1.0 - depth * (-(dx * dx + dy * dy) / (2.0 * width * width)).exp();
                    let v = &mut f.data[gy * w + gx];
                    *v = v.min(t as f32);
                }
            }
        }
    }
    f
}

/// Build the static tissue of an experiment.
pub fn build_scene(cfg: &SimConfig, seed: u64) -> Scene {
    let margin = field_margin(cfg).ceil();
    let r = cfg.cell_radius_px;
    let mut background = random_field(cfg, seed, 1, 8.0 * r, margin);
    background.standardise(1.0, 0.2, 0.3);
    let mut np0 = random_field(cfg, seed, 2, 2.5 * r, margin);
    np0.standardise(1.0, 0.3, 0.2);
    let mut np1 = random_field(cfg, seed, 3, 4.0 * r, margin);
    np1.standardise(1.0, 0.3, 0.2);
    Scene {
        cells: place_cells(cfg, seed),
        background,
        neuropil: [np0, np1],
        vessels: vessel_field(cfg, seed, margin),
        margin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> Cell {
        Cell {
            x: 10.0,
            y: 10.0,
            a: 5.0,
            b: 4.0,
            theta: 0.3,
            nucleus_frac: 0.5,
            nucleus_level: 0.2,
            inhibitory: false,
            brightness: 1.0,
        }
    }

    #[test]
    fn soma_is_a_ring_with_dim_nucleus() {
        let c = cell();
        assert!((c.profile(10.0, 10.0, false) - 0.2).abs() < 1e-9);
        assert_eq!(c.profile(10.0, 10.0, true), 1.0);
        let ring = c.profile(10.0 + 3.5 * 0.3f64.cos(), 10.0 + 3.5 * 0.3f64.sin(), false);
        assert!(ring > 0.99, "ring {ring}");
        assert_eq!(c.profile(30.0, 10.0, false), 0.0);
        assert_eq!(c.nucleus(10.0, 10.0), 1.0);
    }

    #[test]
    fn cells_have_requested_count_and_interneuron_share() {
        let cfg = SimConfig::standard();
        let cells = place_cells(&cfg, 7);
        assert_eq!(cells.len(), 400);
        assert_eq!(cells.iter().filter(|c| c.inhibitory).count(), 40);
    }
}
