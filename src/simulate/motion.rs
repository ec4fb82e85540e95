//! Brain motion during a session: rigid wander with jumps, and an optional warp.
//!
//! Rigid: per axis a mean-reverting random walk (AR(1), 2 s time constant) plus
//! sudden jumps (Poisson in time) that relax over ~5 s, clamped to a bound. The
//! nonrigid part is a displacement field given on a coarse grid of control points
//! (each an AR(1) process) and interpolated to every pixel with separable
//! Catmull–Rom splines, so it is smooth in space and time. Displacements follow the
//! contract's convention: `corrected(x, y) = raw(x + dx(x, y), y + dy(x, y))`,
//! with `(x, y)` in corrected coordinates.

use super::config::SimConfig;
use super::rng::{stream, Purpose};
use crate::motion::interp::catmull_rom;
use rand::Rng;
use rand_distr::StandardNormal;

/// Control points per axis of the warp grid.
pub const WARP_NODES: usize = 4;

/// A session's motion.
#[derive(Debug, Clone)]
pub struct Motion {
    pub shift_x: Vec<f32>,
    pub shift_y: Vec<f32>,
    /// Per frame, the warp displacement of every control point (row-major,
    /// `WARP_NODES × WARP_NODES`), x and y components; empty when rigid only.
    pub warp_x: Vec<Vec<f32>>,
    pub warp_y: Vec<Vec<f32>>,
}

fn ar1(n: usize, fs: f64, tau_s: f64, sd: f64, rng: &mut impl Rng) -> Vec<f64> {
    let rho = (-1.0 / (fs * tau_s)).exp();
    let s = sd * (1.0 - rho * rho).sqrt();
    let mut x = sd * rng.sample::<f64, _>(StandardNormal);
    (0..n)
        .map(|_| {
            x = rho * x + s * rng.sample::<f64, _>(StandardNormal);
            x
        })
        .collect()
}

fn jumps(n: usize, cfg: &SimConfig, rng: &mut impl Rng) -> Vec<f64> {
    let relax = (-1.0 / (cfg.fs * 5.0)).exp();
    let p = (cfg.jump_rate_hz / cfg.fs).min(1.0);
    let mut offset = 0.0;
    (0..n)
        .map(|_| {
            offset *= relax;
            if rng.random::<f64>() < p {
                offset += cfg.jump_sd_px * rng.sample::<f64, _>(StandardNormal);
            }
            offset
        })
        .collect()
}

/// The motion of session `k` with `n` frames.
pub fn session_motion(cfg: &SimConfig, seed: u64, k: usize, n: usize) -> Motion {
    let mut rng = stream(seed, Purpose::Motion, k as u64, 0);
    let axis = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        let wander = ar1(n, cfg.fs, 2.0, cfg.motion_sd_px, rng);
        let jump = jumps(n, cfg, rng);
        wander
            .iter()
            .zip(&jump)
            .map(|(w, j)| (w + j).clamp(-cfg.motion_max_px, cfg.motion_max_px) as f32)
            .collect()
    };
    let shift_x = axis(&mut rng);
    let shift_y = axis(&mut rng);
    let (mut warp_x, mut warp_y) = (Vec::new(), Vec::new());
    if cfg.nonrigid {
        let mut wrng = stream(seed, Purpose::Warp, k as u64, 0);
        let nodes = WARP_NODES * WARP_NODES;
        let paths: Vec<Vec<f64>> = (0..2 * nodes)
            .map(|_| ar1(n, cfg.fs, 1.0, cfg.warp_sd_px, &mut wrng))
            .collect();
        let at = |f: usize, first: usize| -> Vec<f32> {
            paths[first..first + nodes]
                .iter()
                .map(|p| p[f] as f32)
                .collect()
        };
        warp_x = (0..n).map(|f| at(f, 0)).collect();
        warp_y = (0..n).map(|f| at(f, nodes)).collect();
    }
    Motion {
        shift_x,
        shift_y,
        warp_x,
        warp_y,
    }
}

/// Pixel coordinate of control point `j` along an axis of `len` pixels.
pub fn node_position(j: usize, len: usize) -> f64 {
    j as f64 * (len as f64 - 1.0) / (WARP_NODES as f64 - 1.0)
}

/// Interpolation taps (node indices and weights) for every pixel along an axis.
fn taps(len: usize) -> Vec<([usize; 4], [f64; 4])> {
    let spacing = (len as f64 - 1.0) / (WARP_NODES as f64 - 1.0);
    (0..len)
        .map(|p| {
            let u = p as f64 / spacing;
            let j = (u.floor() as usize).min(WARP_NODES - 2);
            let t = u - j as f64;
            let idx = [
                j.saturating_sub(1),
                j,
                (j + 1).min(WARP_NODES - 1),
                (j + 2).min(WARP_NODES - 1),
            ];
            (idx, catmull_rom(t))
        })
        .collect()
}

/// The dense warp field (row-major `height × width`) from control-point values.
pub fn dense_warp(nodes: &[f32], width: usize, height: usize) -> Vec<f32> {
    let tx = taps(width);
    let ty = taps(height);
    // Interpolate along x for every control row, then along y.
    let rows: Vec<Vec<f64>> = (0..WARP_NODES)
        .map(|r| {
            tx.iter()
                .map(|(idx, w)| {
                    (0..4)
                        .map(|q| w[q] * nodes[r * WARP_NODES + idx[q]] as f64)
                        .sum()
                })
                .collect()
        })
        .collect();
    let mut out = vec![0f32; width * height];
    for (y, (idx, w)) in ty.iter().enumerate() {
        for x in 0..width {
            let v: f64 = (0..4).map(|q| w[q] * rows[idx[q]][x]).sum();
            out[y * width + x] = v as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_warp_passes_through_nodes_and_is_constant_for_constant_nodes() {
        let nodes: Vec<f32> = (0..16).map(|i| i as f32 * 0.1).collect();
        let (w, h) = (31, 31);
        let f = dense_warp(&nodes, w, h);
        for r in 0..WARP_NODES {
            for c in 0..WARP_NODES {
                let x = node_position(c, w) as usize;
                let y = node_position(r, h) as usize;
                assert!((f[y * w + x] - nodes[r * 4 + c]).abs() < 1e-5);
            }
        }
        let flat = dense_warp(&[0.7; 16], w, h);
        assert!(flat.iter().all(|v| (v - 0.7).abs() < 1e-5));
    }

    #[test]
    fn rigid_motion_is_bounded() {
        let cfg = SimConfig::sample();
        let m = session_motion(&cfg, 3, 0, 500);
        assert!(m
            .shift_x
            .iter()
            .all(|v| v.abs() <= cfg.motion_max_px as f32));
        let sd = (m.shift_x.iter().map(|v| v * v).sum::<f32>() / 500.0).sqrt();
        assert!(sd > 0.05, "motion present: {sd}");
    }
}
