//! The probability that two ROIs of different sessions are the same cell.
//!
//! Following CellReg (Sheintuch et al. 2017), the features of every candidate
//! pair (ROIs of two sessions whose aligned centroids are within the gate) are
//! modelled as a mixture of two populations fitted on the data themselves: the
//! same cell seen twice (small distance, high footprint similarity) and
//! neighbouring different cells (distance spread over the gate, low
//! similarity). CellReg models the two features' histograms; here each
//! population's normalised distance `d/gate` and similarity are Beta
//! distributed, independent within a population, and the mixture is fitted by
//! expectation–maximisation with weighted moment estimates. Bayes' rule then gives
//! `P(same | d, c)`.

use statrs::function::gamma::ln_gamma;

/// Features of one candidate pair: centroid distance over the gate, and the
/// footprints' similarity, both in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairFeatures {
    pub distance: f64,
    pub similarity: f64,
}

/// A Beta distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beta {
    pub a: f64,
    pub b: f64,
}

impl Beta {
    fn ln_pdf(&self, x: f64) -> f64 {
        let x = x.clamp(1e-4, 1.0 - 1e-4);
        (self.a - 1.0) * x.ln() + (self.b - 1.0) * (1.0 - x).ln() + ln_gamma(self.a + self.b)
            - ln_gamma(self.a)
            - ln_gamma(self.b)
    }

    /// Weighted method-of-moments estimate; None without weight.
    fn fit(values: impl Iterator<Item = (f64, f64)>) -> Option<Beta> {
        let (mut sw, mut sx, mut sxx) = (0.0, 0.0, 0.0);
        for (x, w) in values {
            let x = x.clamp(1e-4, 1.0 - 1e-4);
            sw += w;
            sx += w * x;
            sxx += w * x * x;
        }
        if sw <= 1e-9 {
            return None;
        }
        let m = sx / sw;
        let v = (sxx / sw - m * m).max(1e-6);
        let common = (m * (1.0 - m) / v - 1.0).clamp(0.6, 400.0);
        Some(Beta {
            a: (m * common).max(0.3),
            b: ((1.0 - m) * common).max(0.3),
        })
    }

    fn mean(&self) -> f64 {
        self.a / (self.a + self.b)
    }
}

/// The fitted two-population model.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchModel {
    /// Prior fraction of same-cell pairs among the candidates.
    pub prior_same: f64,
    pub same_distance: Beta,
    pub same_similarity: Beta,
    pub diff_distance: Beta,
    pub diff_similarity: Beta,
    /// The model came from the data (else the fallback model was used).
    pub fitted: bool,
    pub iterations: usize,
}

impl MatchModel {
    /// A model for too few candidates to fit one: same cells close and similar,
    /// different cells spread and dissimilar.
    pub fn fallback() -> Self {
        MatchModel {
            prior_same: 0.5,
            same_distance: Beta { a: 1.5, b: 6.0 },
            same_similarity: Beta { a: 6.0, b: 1.5 },
            diff_distance: Beta { a: 3.0, b: 1.5 },
            diff_similarity: Beta { a: 1.0, b: 4.0 },
            fitted: false,
            iterations: 0,
        }
    }

    /// Fit on the candidate pairs by EM; falls back when there are fewer than
    /// `min_pairs` or a population empties.
    pub fn fit(pairs: &[PairFeatures], min_pairs: usize) -> Self {
        if pairs.len() < min_pairs {
            return Self::fallback();
        }
        // Start: similar and close pairs are the same cell.
        let mut resp: Vec<f64> = pairs
            .iter()
            .map(|p| {
                if p.similarity > 0.5 && p.distance < 0.5 {
                    0.9
                } else {
                    0.1
                }
            })
            .collect();
        let mut model = Self::fallback();
        for it in 0..200 {
            let Some(next) = Self::m_step(pairs, &resp) else {
                return Self::fallback();
            };
            let mut change = 0f64;
            for (r, p) in resp.iter_mut().zip(pairs) {
                let new = next.p_same(*p);
                change = change.max((new - *r).abs());
                *r = new;
            }
            model = MatchModel {
                iterations: it + 1,
                ..next
            };
            if change < 1e-5 {
                break;
            }
        }
        // The same-cell population is the one with the more similar footprints.
        if model.same_similarity.mean() < model.diff_similarity.mean() {
            std::mem::swap(&mut model.same_distance, &mut model.diff_distance);
            std::mem::swap(&mut model.same_similarity, &mut model.diff_similarity);
            model.prior_same = 1.0 - model.prior_same;
        }
        model
    }

    fn m_step(pairs: &[PairFeatures], resp: &[f64]) -> Option<MatchModel> {
        let total: f64 = resp.iter().sum();
        let n = pairs.len() as f64;
        let same = |f: fn(&PairFeatures) -> f64| {
            Beta::fit(pairs.iter().zip(resp).map(move |(p, &r)| (f(p), r)))
        };
        let diff = |f: fn(&PairFeatures) -> f64| {
            Beta::fit(pairs.iter().zip(resp).map(move |(p, &r)| (f(p), 1.0 - r)))
        };
        Some(MatchModel {
            prior_same: (total / n).clamp(1e-3, 1.0 - 1e-3),
            same_distance: same(|p| p.distance)?,
            same_similarity: same(|p| p.similarity)?,
            diff_distance: diff(|p| p.distance)?,
            diff_similarity: diff(|p| p.similarity)?,
            fitted: true,
            iterations: 0,
        })
    }

    /// P(same cell | features).
    pub fn p_same(&self, p: PairFeatures) -> f64 {
        let ls = self.prior_same.ln()
            + self.same_distance.ln_pdf(p.distance)
            + self.same_similarity.ln_pdf(p.similarity);
        let ld = (1.0 - self.prior_same).ln()
            + self.diff_distance.ln_pdf(p.distance)
            + self.diff_similarity.ln_pdf(p.similarity);
        1.0 / (1.0 + (ld - ls).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform numbers.
    fn uniforms(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn separates_a_clear_mixture() {
        let mut u = uniforms(3);
        let mut pairs = Vec::new();
        for _ in 0..300 {
            // Same cells: close and similar.
            pairs.push(PairFeatures {
                distance: 0.15 * u(),
                similarity: 0.75 + 0.2 * u(),
            });
        }
        for _ in 0..700 {
            pairs.push(PairFeatures {
                distance: u().sqrt(),
                similarity: 0.3 * u() * u(),
            });
        }
        let m = MatchModel::fit(&pairs, 50);
        assert!(m.fitted);
        assert!((m.prior_same - 0.3).abs() < 0.03, "{m:?}");
        let correct = pairs
            .iter()
            .enumerate()
            .filter(|(i, p)| (m.p_same(**p) > 0.5) == (*i < 300))
            .count();
        assert!(correct >= 990, "{correct}");
    }

    #[test]
    fn few_pairs_give_the_fallback() {
        let m = MatchModel::fit(
            &[PairFeatures {
                distance: 0.1,
                similarity: 0.9,
            }],
            50,
        );
        assert!(!m.fitted);
        assert!(
            m.p_same(PairFeatures {
                distance: 0.1,
                similarity: 0.9
            }) > 0.9
        );
        assert!(
            m.p_same(PairFeatures {
                distance: 0.8,
                similarity: 0.05
            }) < 0.1
        );
    }
}
