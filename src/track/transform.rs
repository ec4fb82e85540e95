//! A 2-D affine map from one session's corrected coordinates to the reference
//! session's, and its least-squares fit to point pairs.

use crate::error::{Error, Result};

/// `x' = a·x + b·y + tx`, `y' = c·x + d·y + ty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub m: [[f64; 3]; 2],
}

impl Affine {
    /// The identity map.
    pub fn identity() -> Self {
        Affine {
            m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        }
    }

    /// Rotation by `theta` (radians, counter-clockwise in x/y) about `centre`,
    /// then a translation by `(tx, ty)`.
    pub fn rotation_about(theta: f64, centre: (f64, f64), tx: f64, ty: f64) -> Self {
        let (s, c) = theta.sin_cos();
        let (cx, cy) = centre;
        Affine {
            m: [
                [c, -s, cx - c * cx + s * cy + tx],
                [s, c, cy - s * cx - c * cy + ty],
            ],
        }
    }

    /// Map a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.m;
        (
            m[0][0] * x + m[0][1] * y + m[0][2],
            m[1][0] * x + m[1][1] * y + m[1][2],
        )
    }

    /// The inverse map, when the linear part is invertible.
    pub fn inverse(&self) -> Option<Self> {
        let m = &self.m;
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let (a, b, c, d) = (m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det);
        Some(Affine {
            m: [
                [a, b, -(a * m[0][2] + b * m[1][2])],
                [c, d, -(c * m[0][2] + d * m[1][2])],
            ],
        })
    }

    /// Rotation angle of the linear part, degrees.
    pub fn rotation_deg(&self) -> f64 {
        let m = &self.m;
        (m[1][0] - m[0][1]).atan2(m[0][0] + m[1][1]).to_degrees()
    }

    /// Mean scale of the linear part (square root of its determinant).
    pub fn scale(&self) -> f64 {
        let m = &self.m;
        (m[0][0] * m[1][1] - m[0][1] * m[1][0]).abs().sqrt()
    }

    /// Where the point `(x, y)` moves to, minus where it was: the displacement.
    pub fn displacement(&self, x: f64, y: f64) -> (f64, f64) {
        let (u, v) = self.apply(x, y);
        (u - x, v - y)
    }

    /// Least-squares affine fit taking `from[i]` to `to[i]` (faer's QR solve).
    /// Needs at least three pairs that are not collinear.
    pub fn fit(from: &[(f64, f64)], to: &[(f64, f64)]) -> Result<Self> {
        let n = from.len().min(to.len());
        if n < 3 {
            return Err(Error::internal("an affine fit needs three point pairs"));
        }
        // Centre the points so the system is well conditioned.
        let (fx, fy) = centroid(&from[..n]);
        let (tx, ty) = centroid(&to[..n]);
        let a = faer::Mat::<f64>::from_fn(n, 2, |i, j| {
            if j == 0 {
                from[i].0 - fx
            } else {
                from[i].1 - fy
            }
        });
        let b = faer::Mat::<f64>::from_fn(
            n,
            2,
            |i, j| {
                if j == 0 {
                    to[i].0 - tx
                } else {
                    to[i].1 - ty
                }
            },
        );
        let gram = a.transpose() * &a;
        let det = gram[(0, 0)] * gram[(1, 1)] - gram[(0, 1)] * gram[(1, 0)];
        if det.abs() <= 1e-9 * (gram[(0, 0)] * gram[(1, 1)]).max(1e-300) {
            return Err(Error::internal("the points of an affine fit are collinear"));
        }
        use faer::linalg::solvers::SolveLstsq;
        let x = a.qr().solve_lstsq(&b);
        // x is 2×2: column k gives output coordinate k from (dx, dy).
        let (p, q, r, s) = (x[(0, 0)], x[(1, 0)], x[(0, 1)], x[(1, 1)]);
        let lin = Affine {
            m: [[p, q, 0.0], [r, s, 0.0]],
        };
        let (ox, oy) = lin.apply(fx, fy);
        Ok(Affine {
            m: [[p, q, tx - ox], [r, s, ty - oy]],
        })
    }

    /// Least-squares rigid fit (rotation + translation, Procrustes) of `from` to `to`.
    pub fn fit_rigid(from: &[(f64, f64)], to: &[(f64, f64)]) -> Result<Self> {
        let n = from.len().min(to.len());
        if n < 2 {
            return Err(Error::internal("a rigid fit needs two point pairs"));
        }
        let (fx, fy) = centroid(&from[..n]);
        let (tx, ty) = centroid(&to[..n]);
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for i in 0..n {
            let (ax, ay) = (from[i].0 - fx, from[i].1 - fy);
            let (bx, by) = (to[i].0 - tx, to[i].1 - ty);
            sxx += ax * bx + ay * by;
            sxy += ax * by - ay * bx;
        }
        let theta = sxy.atan2(sxx);
        Ok(Affine::rotation_about(theta, (fx, fy), tx - fx, ty - fy))
    }
}

/// The mean of some points (they must not be empty).
fn centroid(p: &[(f64, f64)]) -> (f64, f64) {
    let (sx, sy) = p.iter().fold((0.0, 0.0), |a, q| (a.0 + q.0, a.1 + q.1));
    (sx / p.len() as f64, sy / p.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64), tol: f64) -> bool {
        (a.0 - b.0).abs() < tol && (a.1 - b.1).abs() < tol
    }

    #[test]
    fn rotation_about_keeps_the_centre_and_inverse_undoes_it() {
        let t = Affine::rotation_about(0.1, (50.0, 40.0), 3.0, -2.0);
        assert!(close(t.apply(50.0, 40.0), (53.0, 38.0), 1e-12));
        assert!((t.rotation_deg() - 0.1f64.to_degrees()).abs() < 1e-9);
        assert!((t.scale() - 1.0).abs() < 1e-12);
        let inv = t.inverse().unwrap();
        let p = t.apply(7.0, 11.0);
        assert!(close(inv.apply(p.0, p.1), (7.0, 11.0), 1e-9));
    }

    #[test]
    fn fits_recover_a_known_map() {
        let truth = Affine {
            m: [[1.01, -0.03, 4.5], [0.035, 0.99, -7.25]],
        };
        let from: Vec<(f64, f64)> = (0..40)
            .map(|i| ((i * 37 % 200) as f64, (i * 91 % 170) as f64))
            .collect();
        let to: Vec<(f64, f64)> = from.iter().map(|p| truth.apply(p.0, p.1)).collect();
        let fit = Affine::fit(&from, &to).unwrap();
        for i in 0..2 {
            for j in 0..3 {
                assert!((fit.m[i][j] - truth.m[i][j]).abs() < 1e-8, "{fit:?}");
            }
        }
        let rigid = Affine::rotation_about(-0.05, (0.0, 0.0), 10.0, 3.0);
        let to: Vec<(f64, f64)> = from.iter().map(|p| rigid.apply(p.0, p.1)).collect();
        let fit = Affine::fit_rigid(&from, &to).unwrap();
        assert!(close(fit.apply(33.0, 44.0), rigid.apply(33.0, 44.0), 1e-9));
    }

    #[test]
    fn degenerate_fits_are_errors() {
        let line: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert!(Affine::fit(&line, &line).is_err());
        assert!(Affine::fit(&line[..2], &line[..2]).is_err());
        assert!(Affine::identity().inverse().is_some());
    }
}
