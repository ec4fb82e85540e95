//! The tests of responsiveness (SCIENCE.md §3.1): one-sided paired tests of
//! response against baseline across repetitions, and Benjamini–Hochberg.
//!
//! - Wilcoxon signed-rank (Wilcoxon 1945), zero differences dropped: the exact
//!   null distribution of W⁺ (all 2ⁿ sign patterns, by dynamic programming) for
//!   n ≤ 25 without ties; otherwise the normal approximation with the tie
//!   correction of the variance and a continuity correction of ½.
//! - Paired t-test, one-sided, Student's t from `statrs`.
//! - Benjamini–Hochberg (1995) adjusted p-values (step-up, monotone).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Median of the finite values of `v`; NaN when there are none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One-sided Wilcoxon signed-rank p-value for `diffs > 0` (response above
/// baseline). NaN when every difference is zero or non-finite.
pub fn wilcoxon_greater(diffs: &[f64]) -> f64 {
    let mut d: Vec<f64> = diffs
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v != 0.0)
        .collect();
    let n = d.len();
    if n == 0 {
        return f64::NAN;
    }
    d.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    // Average ranks of |d| over ties.
    let mut ranks = vec![0.0; n];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[j + 1].abs() == d[i].abs() {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        ranks[i..=j].iter_mut().for_each(|r| *r = avg);
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let w_plus: f64 = d
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    if tie_term == 0.0 && n <= 25 {
        exact_upper_tail(n, w_plus.round() as usize)
    } else {
        let nf = n as f64;
        let mean = nf * (nf + 1.0) / 4.0;
        let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term / 48.0;
        if var <= 0.0 {
            return f64::NAN;
        }
        let z = (w_plus - mean - 0.5) / var.sqrt();
        1.0 - Normal::standard().cdf(z)
    }
}

/// P(W⁺ ≥ w) under the null for n untied ranks.
fn exact_upper_tail(n: usize, w: usize) -> f64 {
    let max = n * (n + 1) / 2;
    // counts[s] = number of subsets of {1..n} with rank sum s.
    let mut counts = vec![0f64; max + 1];
    counts[0] = 1.0;
    for r in 1..=n {
        for s in (r..=max).rev() {
            counts[s] += counts[s - r];
        }
    }
    if w > max {
        return 0.0;
    }
    let total: f64 = counts.iter().sum();
    counts[w..].iter().sum::<f64>() / total
}

/// One-sided paired t-test p-value for mean(`diffs`) > 0. NaN with fewer than two
/// finite values or no variance.
pub fn paired_t_greater(diffs: &[f64]) -> f64 {
    let d: Vec<f64> = diffs.iter().copied().filter(|v| v.is_finite()).collect();
    let n = d.len();
    if n < 2 {
        return f64::NAN;
    }
    let nf = n as f64;
    let mean = d.iter().sum::<f64>() / nf;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    if !(var > 0.0) {
        return f64::NAN;
    }
    let t = mean / (var / nf).sqrt();
    match StudentsT::new(0.0, 1.0, nf - 1.0) {
        Ok(dist) => 1.0 - dist.cdf(t),
        Err(_) => f64::NAN,
    }
}

/// Benjamini–Hochberg adjusted p-values; NaN inputs stay NaN and are not counted.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_finite()).collect();
    let m = idx.len() as f64;
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![f64::NAN; p.len()];
    let mut running = 1.0f64;
    for (rank, &i) in idx.iter().enumerate().rev() {
        let q = p[i] * m / (rank + 1) as f64;
        running = running.min(q);
        out[i] = running.min(1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_non_finite_values() {
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::INFINITY, 2.0, 3.0]), 2.5);
        assert!(median(vec![f64::NAN]).is_nan());
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn wilcoxon_exact_matches_the_enumeration() {
        // All five positive: W+ = 15, P = 1/32.
        assert!((wilcoxon_greater(&[1.0, 2.0, 3.0, 4.0, 5.0]) - 1.0 / 32.0).abs() < 1e-12);
        // Ranks 1..5, negative on rank 1: W+ = 14; P(W+ >= 14) = 2/32.
        assert!((wilcoxon_greater(&[-1.0, 2.0, 3.0, 4.0, 5.0]) - 2.0 / 32.0).abs() < 1e-12);
        // All negative: P = 1.
        assert!((wilcoxon_greater(&[-1.0, -2.0, -3.0]) - 1.0).abs() < 1e-12);
        // n = 10, W+ = 50 (ranks 1..10 with 2 and 3 negative): scipy gives 0.009765625.
        let d = [1.0, -2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert!(
            (wilcoxon_greater(&d) - 0.009765625).abs() < 1e-9,
            "{}",
            wilcoxon_greater(&d)
        );
        assert!(wilcoxon_greater(&[0.0, 0.0]).is_nan());
    }

    #[test]
    fn wilcoxon_with_ties_uses_the_corrected_normal() {
        // Ties: |d| = 1,1,2,2,3,3,4,4 all positive; W+ = 36 = max.
        let d = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        let p = wilcoxon_greater(&d);
        // mean 18, var = 8·9·17/24 − 4·6/48 = 51 − 0.5 = 50.5; z = 17.5/√50.5.
        let z: f64 = 17.5 / 50.5f64.sqrt();
        let expected = 1.0 - Normal::standard().cdf(z);
        assert!((p - expected).abs() < 1e-12 && p < 0.01, "{p}");
    }

    #[test]
    fn paired_t_and_bh() {
        // mean 2, sd 1.5811, n 5: t = 2.8284, df 4, one-sided p = 0.02371.
        let p = paired_t_greater(&[0.0, 1.0, 2.0, 3.0, 4.0]);
        assert!((p - 0.023_71).abs() < 1e-4, "{p}");
        assert!(paired_t_greater(&[1.0, 1.0, 1.0]).is_nan());
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, f64::NAN, 0.5]);
        // m = 4: sorted 0.01 (×4 = 0.04), 0.03 (×2 = 0.06), 0.04 (×4/3 = 0.0533), 0.5.
        assert!((q[0] - 0.04).abs() < 1e-12);
        assert!((q[2] - 0.053_333_333).abs() < 1e-6, "{q:?}");
        assert!((q[1] - 0.053_333_333).abs() < 1e-6);
        assert!(q[3].is_nan());
        assert!((q[4] - 0.5).abs() < 1e-12);
    }
}
