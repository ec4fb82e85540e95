//! The optional smooth nonrigid correction between sessions: what the affine map
//! leaves of the paired centroids' displacements, smoothed into a field.
//!
//! The field is Gaussian kernel regression (Nadaraya–Watson) of the residual
//! vectors at the paired cells, shrunk towards zero where few cells are near
//! (`prior` is the kernel weight that counts as "enough"): at reference position q,
//! `f(q) = Σ K(q, qᵢ) rᵢ / (Σ K(q, qᵢ) + prior)`. Its benefit is measured by
//! leave-one-out: each pair's residual against the field fitted without it.

/// A displacement field in reference coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacementField {
    points: Vec<(f64, f64)>,
    vectors: Vec<(f64, f64)>,
    sigma: f64,
    prior: f64,
}

impl DisplacementField {
    /// Fit to residual `vectors` (reference − mapped) at mapped `points`.
    pub fn fit(points: Vec<(f64, f64)>, vectors: Vec<(f64, f64)>, sigma: f64, prior: f64) -> Self {
        DisplacementField {
            points,
            vectors,
            sigma: sigma.max(1.0),
            prior: prior.max(1e-6),
        }
    }

    fn kernel(&self, a: (f64, f64), b: (f64, f64)) -> f64 {
        let d2 = (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2);
        let s2 = self.sigma * self.sigma;
        if d2 > 16.0 * s2 {
            0.0
        } else {
            (-0.5 * d2 / s2).exp()
        }
    }

    fn estimate(&self, q: (f64, f64), skip: Option<usize>) -> (f64, f64) {
        let (mut sx, mut sy, mut sw) = (0.0, 0.0, self.prior);
        for (i, (&p, &v)) in self.points.iter().zip(&self.vectors).enumerate() {
            if Some(i) == skip {
                continue;
            }
            let k = self.kernel(q, p);
            sx += k * v.0;
            sy += k * v.1;
            sw += k;
        }
        (sx / sw, sy / sw)
    }

    /// The displacement at reference position `q`.
    pub fn at(&self, q: (f64, f64)) -> (f64, f64) {
        self.estimate(q, None)
    }

    /// RMS of the residuals left after the field, each predicted without its
    /// own pair (leave-one-out).
    pub fn loo_residual(&self) -> f64 {
        let n = self.points.len();
        if n == 0 {
            return f64::NAN;
        }
        let ss: f64 = (0..n)
            .map(|i| {
                let f = self.estimate(self.points[i], Some(i));
                (self.vectors[i].0 - f.0).powi(2) + (self.vectors[i].1 - f.1).powi(2)
            })
            .sum();
        (ss / n as f64).sqrt()
    }

    /// RMS magnitude of the field at its points.
    pub fn rms(&self) -> f64 {
        let n = self.points.len().max(1) as f64;
        (self
            .points
            .iter()
            .map(|&p| {
                let f = self.at(p);
                f.0 * f.0 + f.1 * f.1
            })
            .sum::<f64>()
            / n)
            .sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smooth_warp_is_learnt_and_beats_no_field_out_of_sample() {
        // A smooth warp sampled at a grid of cells, plus small jitter.
        let mut pts = Vec::new();
        let mut vec = Vec::new();
        for y in 0..15 {
            for x in 0..15 {
                let p = (x as f64 * 20.0, y as f64 * 20.0);
                let jitter = (((x * 7 + y * 3) % 5) as f64 - 2.0) * 0.05;
                pts.push(p);
                vec.push((
                    (p.1 / 300.0 * 3.0).sin() + jitter,
                    (p.0 / 300.0 * 2.0).cos() - jitter,
                ));
            }
        }
        let raw =
            (vec.iter().map(|v| v.0 * v.0 + v.1 * v.1).sum::<f64>() / vec.len() as f64).sqrt();
        let f = DisplacementField::fit(pts, vec, 30.0, 0.5);
        assert!(
            f.loo_residual() < 0.3 * raw,
            "{} vs {raw}",
            f.loo_residual()
        );
        let at = f.at((150.0, 100.0));
        assert!((at.0 - (1.0f64).sin()).abs() < 0.15, "{at:?}");
        // Far from every cell the field fades to zero.
        let far = f.at((5000.0, 5000.0));
        assert!(far.0.abs() < 1e-9 && far.1.abs() < 1e-9);
    }
}
