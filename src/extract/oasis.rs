//! OASIS deconvolution of calcium traces into denoised calcium and spikes.
//!
//! Input: one ROI's fluorescence trace `y` (baseline removed for the
//! low-level solvers; [`deconvolve`] removes it for you) and the
//! autoregressive (AR) coefficients of the indicator kernel.
//! Output: denoised calcium `c` and spiking activity `s`, both of length T,
//! linked by the AR model `s_t = c_t − g₁c_{t−1} − g₂c_{t−2}`.
//!
//! Method: OASIS, Friedrich, Zhou & Paninski (2017), "Fast online
//! deconvolution of calcium imaging data", PLoS Comput Biol 13(3): e1005423.
//! It solves
//!
//! ```text
//! minimise ½‖c − y‖² + λ‖s‖₁   subject to  s = G c ≥ 0,
//! ```
//!
//! or the paper's thresholded variant, where every spike must be 0 or ≥ `s_min`.
//! Because `‖s‖₁ = 1ᵀG c` is linear in `c` when `s ≥ 0`, the L1 penalty is
//! folded into the data (`y − λGᵀ1`) and the solvers only handle the
//! constrained least-squares problem.
//!
//! * AR(1) ([`oasis_ar1`]): the paper's pool-merging active-set algorithm,
//!   exact for `s_min = 0`, O(T) time.
//! * AR(2) ([`oasis_ar2`]): the AR(2) coupling between neighbouring pools
//!   makes greedy merging only approximate, so this file solves the same
//!   QP exactly through its dual, `min_{μ≥0} ½‖Gᵀμ + y‖²`. Its free set
//!   (μ_t > 0 ⇔ s_t = 0) is exactly the paper's pools, each following the AR(2)
//!   kernel h_k from its first frame. The dual Hessian G Gᵀ is pentadiagonal,
//!   so a projected-Newton active-set method (Bertsekas 1982, SIAM J. Control
//!   Optim. 20:221) costs O(T) per iteration. For the thresholded variant the
//!   paper's greedy AR(2) pool merging (pool values fitted with the kernel h_k)
//!   chooses which frames may spike; the dual solver then refits the
//!   amplitudes exactly on that support, dropping any that fall below `s_min`.
//! * [`noise_sd`], [`estimate_ar`], [`ar1_from_tau`], [`ar2_from_taus`] supply
//!   parameters; [`deconvolve`] strings everything together.
//!
//! Conventions shared by the solvers:
//! * Zero initial conditions (`c_{−1} = c_{−2} = 0`), so `s_0 = c_0`: the first
//!   spike carries the calcium already present at frame 0. It is therefore
//!   exempt from `s_min`. With AR(2) a trace that starts mid-decay is fitted
//!   less well in its first frames (the model cannot start on a pure decay).
//! * Non-finite samples in `y` are treated as missing and replaced by linear
//!   interpolation between the nearest finite samples (held flat at the ends;
//!   an all-missing trace becomes zeros) before solving.
//! * Non-finite or negative `lambda`/`s_min` are treated as 0.
//! * Empty input gives empty output. Nothing here panics.

/// Result of deconvolving one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Deconvolved {
    /// Denoised calcium, same length as the input, in units of `y` above `baseline`.
    pub calcium: Vec<f32>,
    /// Spiking activity `s_t = c_t − Σ g_k c_{t−k}`, same length as the input.
    pub spikes: Vec<f32>,
    /// Constant baseline subtracted from `y` before deconvolution.
    pub baseline: f32,
    /// AR coefficients used (after clamping to a stable range).
    pub g: Vec<f32>,
    /// Noise standard deviation estimated by [`noise_sd`].
    pub noise_sd: f32,
}

/// Largest root magnitude [`estimate_ar`] will return; keeps kernels decaying.
const MAX_ESTIMATED_ROOT: f64 = 0.999;
/// Median of |N(0,1)|: converts a median absolute value into a standard deviation.
const MAD_TO_SD: f64 = 0.674_489_750_196_081_7;
/// Percentile of `y` used as the constant baseline in [`deconvolve`]. Low
/// enough to sit below calcium transients, high enough to ignore noise dips.
const BASELINE_PERCENTILE: f64 = 15.0;
/// Lags beyond p used by the least-squares Yule–Walker fit in [`estimate_ar`].
const EXTRA_YULE_WALKER_LAGS: usize = 4;
/// Fewest finite samples [`estimate_ar`] accepts before refusing to estimate.
const MIN_SAMPLES_FOR_AR: usize = 16;
/// Iteration cap for the projected-Newton dual solver (it normally needs tens).
const MAX_NEWTON_ITERS: usize = 500;
/// Cap on re-solve rounds for the AR(2) thresholded variant.
const MAX_THRESHOLD_ROUNDS: usize = 50;
/// Armijo sufficient-decrease constant.
const ARMIJO_SIGMA: f64 = 1e-4;
/// Smallest step the line search tries before declaring stagnation.
const MIN_STEP: f64 = 1e-12;
/// Projected-gradient tolerance relative to the data scale.
const GRAD_TOL: f64 = 1e-10;
/// Upper bound (relative to data scale) on the ε of the ε-active set.
const ACTIVE_EPS: f64 = 1e-3;

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// AR(1) coefficient from the decay time constant: `g = exp(−1/(tau_s·fs))`.
///
/// Returns 0 (no memory) when `tau_s·fs` is not a positive number, and 1 when
/// it is +∞.
pub fn ar1_from_tau(tau_s: f32, fs: f32) -> f32 {
    let frames = f64::from(tau_s) * f64::from(fs);
    if frames.is_nan() || frames <= 0.0 {
        0.0
    } else {
        (-1.0 / frames).exp() as f32
    }
}

/// AR(2) coefficients from rise and decay time constants:
/// `g1 = d + r`, `g2 = −d·r` with `d = exp(−1/(tau_decay·fs))`,
/// `r = exp(−1/(tau_rise·fs))` (the kernel is a difference of exponentials).
/// Invalid time constants map to a root of 0 as in [`ar1_from_tau`].
pub fn ar2_from_taus(tau_rise_s: f32, tau_decay_s: f32, fs: f32) -> (f32, f32) {
    let d = f64::from(ar1_from_tau(tau_decay_s, fs));
    let r = f64::from(ar1_from_tau(tau_rise_s, fs));
    ((d + r) as f32, (-d * r) as f32)
}

/// Clamp an AR(1) coefficient to [0, 1]: pool merging assumes a non-negative,
/// non-growing kernel. NaN means "no memory".
fn clamp_ar1(g: f32) -> f64 {
    if g.is_nan() {
        0.0
    } else {
        f64::from(g).clamp(0.0, 1.0)
    }
}

/// Project (g1, g2) into the closed AR(2) stability triangle
/// `|g2| ≤ 1, |g1| ≤ 1 − g2`, so the kernel never grows. NaN entries become 0.
fn clamp_ar2(g1: f32, g2: f32) -> (f64, f64) {
    let g2 = if g2.is_nan() {
        0.0
    } else {
        f64::from(g2).clamp(-1.0, 1.0)
    };
    let g1 = if g1.is_nan() { 0.0 } else { f64::from(g1) };
    // g2 ≤ 1 guarantees g2 − 1 ≤ 1 − g2, so the bounds are ordered.
    (g1.clamp(g2 - 1.0, 1.0 - g2), g2)
}

/// Non-negative finite parameter, else 0.
fn non_negative(x: f32) -> f64 {
    if x.is_finite() && x > 0.0 {
        f64::from(x)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------
// Input conditioning shared by both solvers
// ---------------------------------------------------------------------------

/// Replace non-finite samples by linear interpolation of their finite
/// neighbours (constant extension at the ends; zeros if nothing is finite).
fn fill_non_finite(y: &[f32]) -> Vec<f64> {
    let mut out = vec![0.0; y.len()];
    let mut last: Option<usize> = None;
    for (t, &v) in y.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let v = f64::from(v);
        match last {
            Some(p) if p + 1 < t => {
                let (a, span) = (out[p], (t - p) as f64);
                for (k, slot) in out[p + 1..t].iter_mut().enumerate() {
                    *slot = a + (v - a) * (k + 1) as f64 / span;
                }
            }
            None => out[..t].fill(v),
            _ => {}
        }
        out[t] = v;
        last = Some(t);
    }
    if let Some(p) = last {
        let tail = out[p];
        out[p + 1..].fill(tail);
    }
    out
}

/// Fold the L1 penalty into the data: `λ‖s‖₁ = λ·(Gᵀ1)ᵀc`, and
/// `(Gᵀ1)_t = 1 − g1·[t+1 < T] − g2·[t+2 < T]`, so the penalised problem is the
/// unpenalised one on `y − λGᵀ1` (completing the square).
fn penalized_target(y: &[f64], g1: f64, g2: f64, lambda: f64) -> Vec<f64> {
    let n = y.len();
    y.iter()
        .enumerate()
        .map(|(t, &v)| {
            let mut weight = 1.0;
            if t + 1 < n {
                weight -= g1;
            }
            if t + 2 < n {
                weight -= g2;
            }
            v - lambda * weight
        })
        .collect()
}

// ---------------------------------------------------------------------------
// AR(1): pool merging
// ---------------------------------------------------------------------------

/// A run of frames sharing one spike-free exponential decay `v·g^k`.
/// `num`/`den` are the sufficient statistics of its least-squares value:
/// `v = Σ g^k y_{start+k} / Σ g^{2k}`.
#[derive(Clone, Copy)]
struct Pool {
    num: f64,
    den: f64,
    start: usize,
    len: usize,
}

impl Pool {
    /// Least-squares value of the pool's first frame. The first pool is
    /// clamped at 0 because it has no predecessor to bound it from below.
    fn value(&self, is_first: bool) -> f64 {
        let v = self.num / self.den;
        if is_first {
            v.max(0.0)
        } else {
            v
        }
    }
}

/// AR(1) OASIS with L1 penalty `lambda` (≥ 0) and minimum spike size `s_min`
/// (≥ 0; 0 = none).
///
/// Solves `min ½‖c − y‖² + λ‖s‖₁` s.t. `s_t = c_t − g c_{t−1}` is ≥ `s_min` or
/// = 0, with the pool-merging active-set algorithm of Friedrich et al. (2017):
/// frames are added as new pools and the last pool is merged into its
/// predecessor while its spike `v_i − g^{ℓ_{i−1}} v_{i−1}` is below `s_min`.
/// Each frame is merged at most once, so the cost is O(T). Exact for
/// `s_min = 0`; for `s_min > 0` it is the paper's greedy thresholded variant.
///
/// `y` must already have its baseline removed. `g` is clamped to [0, 1].
/// Returns `(calcium, spikes)`, both of length `y.len()` and ≥ 0.
pub fn oasis_ar1(y: &[f32], g: f32, lambda: f32, s_min: f32) -> (Vec<f32>, Vec<f32>) {
    if y.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let g = clamp_ar1(g);
    let target = penalized_target(&fill_non_finite(y), g, 0.0, non_negative(lambda));
    let powers = powers_of(g, y.len());
    let pools = merge_pools(&target, &powers, non_negative(s_min));
    pools_to_traces(&pools, &powers, y.len())
}

/// `g^k` for k = 0..=n (underflow to 0 is harmless).
fn powers_of(g: f64, n: usize) -> Vec<f64> {
    let mut powers = Vec::with_capacity(n + 1);
    let mut p = 1.0;
    for _ in 0..=n {
        powers.push(p);
        p *= g;
    }
    powers
}

/// Run the left-to-right pool-merging pass.
fn merge_pools(target: &[f64], powers: &[f64], s_min: f64) -> Vec<Pool> {
    let mut pools: Vec<Pool> = Vec::with_capacity(target.len());
    for (t, &v) in target.iter().enumerate() {
        pools.push(Pool {
            num: v,
            den: 1.0,
            start: t,
            len: 1,
        });
        while last_pool_violates(&pools, powers, s_min) {
            merge_last_two(&mut pools, powers);
        }
    }
    pools
}

/// Does the newest pool start with a spike below `s_min` (negative when 0)?
fn last_pool_violates(pools: &[Pool], powers: &[f64], s_min: f64) -> bool {
    match pools {
        [.., prev, last] => {
            let prev_value = prev.value(pools.len() == 2);
            last.value(false) < powers[prev.len] * prev_value + s_min
        }
        _ => false,
    }
}

/// Merge the newest pool into its predecessor: the merged decay continues the
/// predecessor's exponential, so the newcomer's statistics are rescaled by
/// `g^{ℓ}` and `g^{2ℓ}`.
fn merge_last_two(pools: &mut Vec<Pool>, powers: &[f64]) {
    if let Some(last) = pools.pop() {
        if let Some(prev) = pools.last_mut() {
            let w = powers[prev.len];
            prev.num += w * last.num;
            prev.den += w * w * last.den;
            prev.len += last.len;
        }
    }
}

/// Expand pools into calcium `v·g^k` and spikes at pool starts.
fn pools_to_traces(pools: &[Pool], powers: &[f64], n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut calcium = vec![0.0f32; n];
    let mut spikes = vec![0.0f32; n];
    let mut previous: Option<(f64, usize)> = None;
    for (i, pool) in pools.iter().enumerate() {
        let v = pool.value(i == 0);
        for (k, c) in calcium[pool.start..pool.start + pool.len]
            .iter_mut()
            .enumerate()
        {
            *c = (v * powers[k]) as f32;
        }
        let spike = match previous {
            None => v,
            Some((pv, plen)) => v - powers[plen] * pv,
        };
        spikes[pool.start] = spike.max(0.0) as f32;
        previous = Some((v, pool.len));
    }
    (calcium, spikes)
}

// ---------------------------------------------------------------------------
// AR(2): exact active set on the dual
// ---------------------------------------------------------------------------

/// The AR operator `G` of order ≤ 2 (`g2 = 0` gives AR(1)).
#[derive(Clone, Copy)]
struct ArOperator {
    g1: f64,
    g2: f64,
}

impl ArOperator {
    /// `s = G c`: `s_t = c_t − g1 c_{t−1} − g2 c_{t−2}` (zero initial conditions).
    fn spikes_from_calcium(self, c: &[f64], s: &mut [f64]) {
        for t in 0..c.len() {
            let mut v = c[t];
            if t >= 1 {
                v -= self.g1 * c[t - 1];
            }
            if t >= 2 {
                v -= self.g2 * c[t - 2];
            }
            s[t] = v;
        }
    }

    /// `c = G⁻¹ s`, i.e. run the AR recursion forward from zero.
    fn calcium_from_spikes(self, s: &[f64]) -> Vec<f64> {
        let mut c: Vec<f64> = Vec::with_capacity(s.len());
        for (t, &st) in s.iter().enumerate() {
            let mut v = st;
            if t >= 1 {
                v += self.g1 * c[t - 1];
            }
            if t >= 2 {
                v += self.g2 * c[t - 2];
            }
            c.push(v);
        }
        c
    }

    /// `c = b + Gᵀμ`: the primal point belonging to dual variables `μ`.
    fn primal_from_dual(self, b: &[f64], mu: &[f64], c: &mut [f64]) {
        let n = b.len();
        for t in 0..n {
            let mut v = b[t] + mu[t];
            if t + 1 < n {
                v -= self.g1 * mu[t + 1];
            }
            if t + 2 < n {
                v -= self.g2 * mu[t + 2];
            }
            c[t] = v;
        }
    }

    /// Entry `(i, j)`, `i ≥ j`, of the pentadiagonal dual Hessian `G Gᵀ`.
    /// Rows near t = 0 are shorter because G is truncated there.
    fn gram_entry(self, i: usize, j: usize) -> f64 {
        match i - j {
            0 => {
                let mut v = 1.0;
                if i >= 1 {
                    v += self.g1 * self.g1;
                }
                if i >= 2 {
                    v += self.g2 * self.g2;
                }
                v
            }
            1 => {
                if i >= 2 {
                    -self.g1 + self.g1 * self.g2
                } else {
                    -self.g1
                }
            }
            2 => -self.g2,
            _ => 0.0,
        }
    }
}

/// AR(2) OASIS: `min ½‖c − y‖² + λ‖s‖₁` s.t.
/// `s_t = c_t − g1 c_{t−1} − g2 c_{t−2}` is ≥ `s_min` or = 0.
///
/// For `s_min = 0` this is solved exactly (to ~1e-10 relative) by projected
/// Newton on the dual (see the module docs); pools are the runs of frames with
/// `s_t = 0`, each following the AR(2) kernel from its first frame.
///
/// For `s_min > 0` (non-convex) it is a heuristic in two steps: (1) the
/// paper's greedy AR(2) pool merging, where a pool starting at `t` holds
/// `c_{t+k} = v h_k + g2 c_{t−1} h_{k−1}` and is merged into its predecessor
/// while its spike is below `s_min`, picks the frames allowed to spike;
/// (2) spike amplitudes are refitted exactly on that support (all other
/// frames forced to `s = 0`), and any spike that drops below `s_min` is forced
/// to zero and the refit repeated. Step (1) costs O(T·K), K the number of
/// frames before the kernel decays below 1e-9 of its peak.
///
/// `(g1, g2)` are projected into the AR(2) stability triangle. Any stable pair
/// is accepted; `calcium ≥ 0` is guaranteed when the kernel is non-negative
/// (e.g. two real roots in [0, 1), the rise/decay case), while complex-root
/// kernels can ring below zero. Cost is O(T) per Newton iteration.
pub fn oasis_ar2(y: &[f32], g1: f32, g2: f32, lambda: f32, s_min: f32) -> (Vec<f32>, Vec<f32>) {
    if y.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let (g1, g2) = clamp_ar2(g1, g2);
    let op = ArOperator { g1, g2 };
    let target = penalized_target(&fill_non_finite(y), g1, g2, non_negative(lambda));
    let s_min = non_negative(s_min);
    let n = y.len();

    // `bounded[t]`: s_t ≥ 0 (μ_t ≥ 0). Cleared when s_t is forced to 0 (μ_t free).
    // Re-solving the convex problem after zeroing small spikes only moves them
    // to neighbouring frames, so the thresholded variant first fixes a sparse
    // support with the greedy pass.
    let mut bounded = if s_min > 0.0 {
        greedy_ar2_support(op, &target, s_min)
    } else {
        vec![true; n]
    };
    let mut mu = vec![0.0; n];
    let mut c = vec![0.0; n];
    let mut s = vec![0.0; n];
    for _ in 0..MAX_THRESHOLD_ROUNDS {
        solve_dual(op, &target, &bounded, &mut mu);
        op.primal_from_dual(&target, &mu, &mut c);
        op.spikes_from_calcium(&c, &mut s);
        if !force_small_spikes_to_zero(&s, &mu, s_min, &mut bounded) {
            break;
        }
    }
    finalize_ar2(op, &s, &mu, &bounded, s_min)
}

/// Relative size below which the impulse response is treated as zero.
const KERNEL_TOL: f64 = 1e-9;

/// Impulse response `h_0 = 1, h_k = g1 h_{k−1} + g2 h_{k−2}`, truncated once
/// two consecutive values are below `KERNEL_TOL` of the peak (the state of the
/// recursion is then negligible), and at most `n` long.
fn truncated_kernel(op: ArOperator, n: usize) -> Vec<f64> {
    let mut h: Vec<f64> = Vec::new();
    let mut peak = 0.0f64;
    let (mut prev1, mut prev2) = (0.0f64, 0.0f64);
    for k in 0..n {
        let v = if k == 0 {
            1.0
        } else {
            op.g1 * prev1 + op.g2 * prev2
        };
        peak = peak.max(v.abs());
        if k >= 2 && v.abs() < KERNEL_TOL * peak && prev1.abs() < KERNEL_TOL * peak {
            break;
        }
        h.push(v);
        prev2 = prev1;
        prev1 = v;
    }
    h
}

/// Truncated kernel with the prefix sums a pool's least-squares value needs.
struct Kernel {
    h: Vec<f64>,
    /// `squares[l] = Σ_{k<l} h_k²`.
    squares: Vec<f64>,
    /// `cross[l] = Σ_{k<l} h_k h_{k−1}` (h_{−1} = 0).
    cross: Vec<f64>,
}

impl Kernel {
    fn new(op: ArOperator, n: usize) -> Self {
        let h = truncated_kernel(op, n);
        let mut squares = vec![0.0; h.len() + 1];
        let mut cross = vec![0.0; h.len() + 1];
        for k in 0..h.len() {
            let previous = if k >= 1 { h[k - 1] } else { 0.0 };
            squares[k + 1] = squares[k] + h[k] * h[k];
            cross[k + 1] = cross[k] + h[k] * previous;
        }
        Kernel { h, squares, cross }
    }

    /// `h_k`, zero for k < 0 and beyond the truncation.
    fn at(&self, k: isize) -> f64 {
        usize::try_from(k)
            .ok()
            .and_then(|k| self.h.get(k))
            .copied()
            .unwrap_or(0.0)
    }
}

/// An AR(2) pool: frames `start..start+len` with no spike after the first,
/// so `c_{start+k} = value·h_k + g2·c_before·h_{k−1}`.
#[derive(Clone, Copy)]
struct Ar2Pool {
    start: usize,
    len: usize,
    /// `Σ_k h_k y_{start+k}` over the pool (truncated with the kernel).
    num: f64,
    value: f64,
    /// Calcium at `start − 1` and `start − 2` (0 before the trace).
    c_before: f64,
    c_before2: f64,
}

impl Ar2Pool {
    /// Least-squares value given the fixed history `c_before`; the first pool
    /// is clamped at 0 as in AR(1).
    fn fit_value(&mut self, kernel: &Kernel, g2: f64, is_first: bool) {
        let l = self.len.min(kernel.h.len());
        let v = (self.num - g2 * self.c_before * kernel.cross[l]) / kernel.squares[l];
        self.value = if is_first { v.max(0.0) } else { v };
    }

    fn calcium_at(&self, k: usize, kernel: &Kernel, g2: f64) -> f64 {
        let k = k as isize;
        self.value * kernel.at(k) + g2 * self.c_before * kernel.at(k - 1)
    }

    /// Calcium at the pool's last two frames as (second-to-last, last).
    fn tail(&self, kernel: &Kernel, g2: f64) -> (f64, f64) {
        let last = self.calcium_at(self.len - 1, kernel, g2);
        let second = if self.len >= 2 {
            self.calcium_at(self.len - 2, kernel, g2)
        } else {
            self.c_before
        };
        (second, last)
    }

    fn spike(&self, op: ArOperator) -> f64 {
        self.value - op.g1 * self.c_before - op.g2 * self.c_before2
    }
}

/// Greedy AR(2) pool merging with minimum spike `s_min` (Friedrich et al.
/// 2017, AR(2) extension). Returns the frames whose pool starts with a
/// positive spike (frame 0 always), i.e. the support the refit may use.
fn greedy_ar2_support(op: ArOperator, target: &[f64], s_min: f64) -> Vec<bool> {
    let kernel = Kernel::new(op, target.len());
    let mut pools: Vec<Ar2Pool> = Vec::new();
    for (t, &y) in target.iter().enumerate() {
        let (c_before2, c_before) = pools.last().map_or((0.0, 0.0), |p| p.tail(&kernel, op.g2));
        let mut pool = Ar2Pool {
            start: t,
            len: 1,
            num: y,
            value: 0.0,
            c_before,
            c_before2,
        };
        pool.fit_value(&kernel, op.g2, pools.is_empty());
        pools.push(pool);
        while pools.len() >= 2 && pools.last().is_some_and(|p| p.spike(op) < s_min) {
            merge_last_ar2_pools(&mut pools, target, &kernel, op.g2);
        }
    }
    let mut support = vec![false; target.len()];
    for (i, pool) in pools.iter().enumerate() {
        support[pool.start] = i == 0 || pool.spike(op) > 0.0;
    }
    support
}

/// Append the newest pool's frames to its predecessor and refit its value;
/// only the appended frames' kernel terms are new, so they alone are summed.
fn merge_last_ar2_pools(pools: &mut Vec<Ar2Pool>, target: &[f64], kernel: &Kernel, g2: f64) {
    let is_first = pools.len() == 2;
    if let Some(last) = pools.pop() {
        if let Some(prev) = pools.last_mut() {
            let appended: f64 = target[last.start..last.start + last.len]
                .iter()
                .zip(kernel.h.iter().skip(prev.len))
                .map(|(y, h)| y * h)
                .sum();
            prev.num += appended;
            prev.len += last.len;
            prev.fit_value(kernel, g2, is_first);
        }
    }
}

/// Mark spikes in (0, s_min) at t ≥ 1 as forced zeros; report whether any were.
fn force_small_spikes_to_zero(s: &[f64], mu: &[f64], s_min: f64, bounded: &mut [bool]) -> bool {
    if s_min <= 0.0 {
        return false;
    }
    let mut changed = false;
    for t in 1..s.len() {
        // μ_t = 0 marks a frame outside every pool, i.e. a candidate spike.
        if bounded[t] && mu[t] <= 0.0 && s[t] > 0.0 && s[t] < s_min {
            bounded[t] = false;
            changed = true;
        }
    }
    changed
}

/// Clean the dual solution into exactly consistent, non-negative outputs:
/// spikes are zero inside pools and at forced frames, any residue below
/// `s_min` (only possible if the round cap was hit) is dropped, and calcium is
/// regenerated from the spikes so that `s = G c` holds to rounding.
fn finalize_ar2(
    op: ArOperator,
    s: &[f64],
    mu: &[f64],
    bounded: &[bool],
    s_min: f64,
) -> (Vec<f32>, Vec<f32>) {
    let spikes: Vec<f64> = s
        .iter()
        .enumerate()
        .map(|(t, &v)| {
            let in_pool = !bounded[t] || mu[t] > 0.0;
            if in_pool || v <= 0.0 || (t >= 1 && v < s_min) {
                0.0
            } else {
                v
            }
        })
        .collect();
    let calcium = op.calcium_from_spikes(&spikes);
    (
        calcium.iter().map(|&v| v as f32).collect(),
        spikes.iter().map(|&v| v as f32).collect(),
    )
}

/// Projected Newton (Bertsekas 1982) on the dual `min ½‖b + Gᵀμ‖²` subject to
/// `μ_t ≥ 0` where `bounded[t]`. The gradient is `G(b + Gᵀμ) = s`, so the KKT
/// conditions are exactly primal feasibility `s ≥ 0`, dual feasibility `μ ≥ 0`
/// and complementarity. `mu` is the warm start and receives the solution.
fn solve_dual(op: ArOperator, b: &[f64], bounded: &[bool], mu: &mut Vec<f64>) {
    let n = b.len();
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let tol = GRAD_TOL * scale;
    let mut c = vec![0.0; n];
    let mut grad = vec![0.0; n];
    let mut trial = vec![0.0; n];
    let mut trial_c = vec![0.0; n];
    op.primal_from_dual(b, mu, &mut c);
    let mut objective = half_squared_norm(&c);

    for _ in 0..MAX_NEWTON_ITERS {
        op.spikes_from_calcium(&c, &mut grad);
        if projected_gradient_max(mu, &grad, bounded) <= tol {
            break;
        }
        let eps = projection_residual(mu, &grad, bounded).min(ACTIVE_EPS * scale);
        let active: Vec<bool> = (0..n)
            .map(|i| bounded[i] && mu[i] <= eps && grad[i] > 0.0)
            .collect();
        let direction = newton_direction(op, &grad, &active);
        let free_decrease: f64 = (0..n)
            .filter(|&i| !active[i])
            .map(|i| -grad[i] * direction[i])
            .sum();

        let mut step = 1.0;
        let mut accepted = false;
        while step >= MIN_STEP {
            for i in 0..n {
                let v = mu[i] + step * direction[i];
                trial[i] = if bounded[i] { v.max(0.0) } else { v };
            }
            op.primal_from_dual(b, &trial, &mut trial_c);
            let trial_objective = half_squared_norm(&trial_c);
            let active_decrease: f64 = (0..n)
                .filter(|&i| active[i])
                .map(|i| grad[i] * (mu[i] - trial[i]))
                .sum();
            let required = ARMIJO_SIGMA * (step * free_decrease + active_decrease);
            if objective - trial_objective >= required {
                objective = trial_objective;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            // No representable decrease left: we are at the optimum to rounding.
            break;
        }
        std::mem::swap(mu, &mut trial);
        std::mem::swap(&mut c, &mut trial_c);
    }
}

fn half_squared_norm(x: &[f64]) -> f64 {
    0.5 * x.iter().map(|v| v * v).sum::<f64>()
}

/// Largest KKT violation: |∂f/∂μ_t| for interior/free variables, and only the
/// negative part of the gradient for variables sitting on the bound.
fn projected_gradient_max(mu: &[f64], grad: &[f64], bounded: &[bool]) -> f64 {
    mu.iter()
        .zip(grad)
        .zip(bounded)
        .map(|((&m, &g), &b)| {
            if b && m <= 0.0 {
                (-g).max(0.0)
            } else {
                g.abs()
            }
        })
        .fold(0.0, f64::max)
}

/// `‖μ − P(μ − ∇f)‖₂`, Bertsekas' measure for sizing the ε-active set: it
/// shrinks to 0 at the solution, so the set becomes exactly the active bounds.
fn projection_residual(mu: &[f64], grad: &[f64], bounded: &[bool]) -> f64 {
    mu.iter()
        .zip(grad)
        .zip(bounded)
        .map(|((&m, &g), &b)| {
            let projected = if b { (m - g).max(0.0) } else { m - g };
            (m - projected).powi(2)
        })
        .sum::<f64>()
        .sqrt()
}

/// Newton step on the free variables (`H_FF d_F = −∇_F f`) and a diagonally
/// scaled gradient step on the ε-active ones.
fn newton_direction(op: ArOperator, grad: &[f64], active: &[bool]) -> Vec<f64> {
    let n = grad.len();
    let mut direction = vec![0.0; n];
    let free: Vec<usize> = (0..n).filter(|&i| !active[i]).collect();
    for i in (0..n).filter(|&i| active[i]) {
        direction[i] = -grad[i] / op.gram_entry(i, i);
    }
    let (diag, sub1, sub2) = reduced_gram(op, &free);
    let rhs: Vec<f64> = free.iter().map(|&i| -grad[i]).collect();
    let step = solve_pentadiagonal(&diag, &sub1, &sub2, &rhs);
    for (&i, &d) in free.iter().zip(&step) {
        direction[i] = d;
    }
    direction
}

/// Principal submatrix of `G Gᵀ` on the (sorted) free indices. Deleting rows
/// and columns of a banded matrix keeps it banded, so it is stored as a
/// diagonal and two sub-diagonals in compressed indexing.
fn reduced_gram(op: ArOperator, free: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = free.len();
    let mut diag = vec![0.0; m];
    let mut sub1 = vec![0.0; m];
    let mut sub2 = vec![0.0; m];
    for (a, &i) in free.iter().enumerate() {
        diag[a] = op.gram_entry(i, i);
        if a >= 1 && i - free[a - 1] <= 2 {
            sub1[a] = op.gram_entry(i, free[a - 1]);
        }
        if a >= 2 && i - free[a - 2] == 2 {
            sub2[a] = op.gram_entry(i, free[a - 2]);
        }
    }
    (diag, sub1, sub2)
}

/// Solve `A x = r` for symmetric positive-definite pentadiagonal `A`
/// (`sub1[a] = A[a][a−1]`, `sub2[a] = A[a][a−2]`) by banded LDLᵀ in O(n).
/// Pivots are floored at a tiny positive value so round-off on a nearly
/// singular system (g1 + g2 → 1) cannot divide by zero.
fn solve_pentadiagonal(diag: &[f64], sub1: &[f64], sub2: &[f64], rhs: &[f64]) -> Vec<f64> {
    let n = diag.len();
    let mut d = vec![0.0; n];
    let mut l1 = vec![0.0; n];
    let mut l2 = vec![0.0; n];
    for a in 0..n {
        if a >= 2 {
            l2[a] = sub2[a] / d[a - 2];
        }
        if a >= 1 {
            let coupling = if a >= 2 {
                l2[a] * d[a - 2] * l1[a - 1]
            } else {
                0.0
            };
            l1[a] = (sub1[a] - coupling) / d[a - 1];
        }
        let mut pivot = diag[a];
        if a >= 1 {
            pivot -= l1[a] * l1[a] * d[a - 1];
        }
        if a >= 2 {
            pivot -= l2[a] * l2[a] * d[a - 2];
        }
        d[a] = pivot.max(1e-300);
    }
    let mut x = rhs.to_vec();
    for a in 0..n {
        if a >= 1 {
            x[a] -= l1[a] * x[a - 1];
        }
        if a >= 2 {
            x[a] -= l2[a] * x[a - 2];
        }
    }
    for (xa, da) in x.iter_mut().zip(&d) {
        *xa /= da;
    }
    for a in (0..n).rev() {
        if a + 1 < n {
            x[a] -= l1[a + 1] * x[a + 1];
        }
        if a + 2 < n {
            x[a] -= l2[a + 2] * x[a + 2];
        }
    }
    x
}

// ---------------------------------------------------------------------------
// Noise and AR estimation
// ---------------------------------------------------------------------------

/// Noise standard deviation from the median absolute first difference:
/// `σ = median|y_{t+1} − y_t| / (0.6745·√2)`.
///
/// Differencing removes slow drift and nearly all of a decaying calcium
/// signal; the median ignores the sparse large jumps at spikes; for white
/// Gaussian noise the difference has s.d. σ√2 and median |·| of 0.6745 s.d.
/// (Chosen instead of the periodogram-average idea because it needs no DFT,
/// and because spikes leak broadband power into the upper spectrum.)
/// Spike frames are outliers among the differences: when they make up a few
/// percent of frames the estimate is biased upward by a similar few percent.
/// Pairs with a non-finite sample are skipped; returns 0 when fewer than one
/// finite pair exists.
pub fn noise_sd(y: &[f32]) -> f32 {
    let mut diffs: Vec<f64> = y
        .windows(2)
        .filter(|w| w[0].is_finite() && w[1].is_finite())
        .map(|w| (f64::from(w[1]) - f64::from(w[0])).abs())
        .collect();
    match percentile_in_place(&mut diffs, 50.0) {
        Some(m) => (m / (MAD_TO_SD * std::f64::consts::SQRT_2)) as f32,
        None => 0.0,
    }
}

/// Estimate AR(p) coefficients (p = 1 or 2) from the sample autocovariance of
/// `y` by Yule–Walker, with the noise variance `noise_sd(y)²` removed from
/// lag 0 (white measurement noise only inflates lag 0).
///
/// The Yule–Walker equations `γ_k = Σ_j g_j γ_{|k−j|}` are used for lags
/// k = 1..=p+4 and solved by least squares (the "extended" Yule–Walker
/// estimator). The extra lags do not involve the noise-corrected γ₀, so a few
/// percent error in the noise estimate (e.g. from dense spiking) biases the
/// result several times less than the square p-equation system would.
///
/// The result is clamped to a stable range (roots ≤ 0.999: `g ≤ 0.999` for
/// p = 1; `|g2| ≤ 0.999`, `|g1| ≤ 0.999 − g2` for p = 2). Returns `None` when
/// p ∉ {1, 2}, fewer than 16 finite samples exist, no signal variance is left
/// after removing the noise, the equations are singular, or the estimate is
/// non-finite or has `g1 ≤ 0` (not a calcium-like kernel). Autocovariances use
/// only pairs of finite samples.
pub fn estimate_ar(y: &[f32], p: usize) -> Option<Vec<f32>> {
    if !(1..=2).contains(&p) {
        return None;
    }
    let finite = y.iter().filter(|v| v.is_finite()).count();
    if finite < MIN_SAMPLES_FOR_AR {
        return None;
    }
    let mut gamma = autocovariance(y, p + EXTRA_YULE_WALKER_LAGS)?;
    gamma[0] -= f64::from(noise_sd(y)).powi(2);
    if gamma[0].is_nan() || gamma[0] <= 0.0 {
        return None;
    }
    let coeffs = if p == 1 {
        let g = fit_ar1_yule_walker(&gamma)?;
        vec![g.min(MAX_ESTIMATED_ROOT)]
    } else {
        let (g1, g2) = fit_ar2_yule_walker(&gamma)?;
        let g2 = g2.clamp(-MAX_ESTIMATED_ROOT, MAX_ESTIMATED_ROOT);
        vec![
            g1.clamp(g2 - MAX_ESTIMATED_ROOT, MAX_ESTIMATED_ROOT - g2),
            g2,
        ]
    };
    if coeffs[0] <= 0.0 {
        return None;
    }
    Some(coeffs.into_iter().map(|g| g as f32).collect())
}

/// Least squares for `γ_k = g·γ_{k−1}`, k ≥ 1 (γ₀ already noise-corrected).
/// `None` unless the estimate is finite and positive.
fn fit_ar1_yule_walker(gamma: &[f64]) -> Option<f64> {
    let (num, den) = gamma
        .windows(2)
        .fold((0.0, 0.0), |(n, d), w| (n + w[1] * w[0], d + w[0] * w[0]));
    let g = num / den;
    (g.is_finite() && g > 0.0).then_some(g)
}

/// Least squares for `γ_k = g1·γ_{k−1} + g2·γ_{|k−2|}`, k ≥ 1, via the 2×2
/// normal equations. `None` when they are singular or the result non-finite.
fn fit_ar2_yule_walker(gamma: &[f64]) -> Option<(f64, f64)> {
    let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for k in 1..gamma.len() {
        let (x1, x2) = (gamma[k - 1], gamma[k.abs_diff(2)]);
        a11 += x1 * x1;
        a12 += x1 * x2;
        a22 += x2 * x2;
        b1 += gamma[k] * x1;
        b2 += gamma[k] * x2;
    }
    let det = a11 * a22 - a12 * a12;
    if det.is_nan() || det <= 1e-12 * a11 * a22 {
        return None;
    }
    let g1 = (b1 * a22 - b2 * a12) / det;
    let g2 = (a11 * b2 - a12 * b1) / det;
    (g1.is_finite() && g2.is_finite()).then_some((g1, g2))
}

/// Sample autocovariance at lags 0..=max_lag over pairs of finite samples,
/// each lag normalised by its own pair count. `None` if some lag has no pairs.
fn autocovariance(y: &[f32], max_lag: usize) -> Option<Vec<f64>> {
    let (sum, count) = y
        .iter()
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0usize), |(s, n), &v| (s + f64::from(v), n + 1));
    if count == 0 {
        return None;
    }
    let mean = sum / count as f64;
    (0..=max_lag)
        .map(|lag| {
            let (acc, pairs) = y
                .iter()
                .zip(y.iter().skip(lag))
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .fold((0.0f64, 0usize), |(acc, k), (&a, &b)| {
                    (acc + (f64::from(a) - mean) * (f64::from(b) - mean), k + 1)
                });
            (pairs > 0).then(|| acc / pairs as f64)
        })
        .collect()
}

/// Percentile `q` ∈ [0, 100] of `values` (sorted in place), interpolating
/// linearly between order statistics; `None` when empty.
fn percentile_in_place(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    let rank = q.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
    let lo = (rank.floor() as usize).min(n - 1);
    let hi = (rank.ceil() as usize).min(n - 1);
    Some(values[lo] + (rank - lo as f64) * (values[hi] - values[lo]))
}

// ---------------------------------------------------------------------------
// Convenience entry point
// ---------------------------------------------------------------------------

/// Deconvolve one raw trace end to end (thresholded OASIS, λ = 0).
///
/// 1. baseline = 15th percentile of the finite samples of `y` (0 if none) —
///    a constant baseline; remove slow drift beforehand (e.g. with
///    `baseline::maximin`) if the trace has any.
/// 2. noise = [`noise_sd`]`(y)`; `s_min = s_min_sd × noise` (a negative or
///    non-finite `s_min_sd` means 0).
/// 3. Order from `g`: one coefficient → [`oasis_ar1`]; two or more →
///    [`oasis_ar2`] with `g[0], g[1]` (extra entries ignored); none →
///    [`estimate_ar`]`(y − baseline, 1)`, falling back to `g = 0` (no calcium
///    memory) if estimation fails. Coefficients are clamped to a stable range
///    and reported in [`Deconvolved::g`].
pub fn deconvolve(y: &[f32], g: &[f32], s_min_sd: f32) -> Deconvolved {
    let baseline = constant_baseline(y);
    let centred: Vec<f32> = y
        .iter()
        .map(|&v| (f64::from(v) - baseline) as f32)
        .collect();
    let noise = f64::from(noise_sd(y));
    let s_min = (non_negative(s_min_sd) * noise) as f32;
    let coeffs = choose_coefficients(&centred, g);
    let (calcium, spikes) = match coeffs.as_slice() {
        [g1, g2] => oasis_ar2(&centred, *g1, *g2, 0.0, s_min),
        [g1] => oasis_ar1(&centred, *g1, 0.0, s_min),
        _ => oasis_ar1(&centred, 0.0, 0.0, s_min),
    };
    Deconvolved {
        calcium,
        spikes,
        baseline: baseline as f32,
        g: coeffs,
        noise_sd: noise as f32,
    }
}

/// The documented constant baseline: low percentile of the finite samples.
fn constant_baseline(y: &[f32]) -> f64 {
    let mut finite: Vec<f64> = y
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    percentile_in_place(&mut finite, BASELINE_PERCENTILE).unwrap_or(0.0)
}

/// Clamped coefficients for [`deconvolve`]: given ones, or estimated AR(1).
fn choose_coefficients(centred: &[f32], g: &[f32]) -> Vec<f32> {
    match g {
        [] => {
            let estimated = estimate_ar(centred, 1).unwrap_or_else(|| vec![0.0]);
            estimated.iter().map(|&v| clamp_ar1(v) as f32).collect()
        }
        [g1] => vec![clamp_ar1(*g1) as f32],
        [g1, g2, ..] => {
            let (a, b) = clamp_ar2(*g1, *g2);
            vec![a as f32, b as f32]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::extract::test_rng::Rng;

    /// Synthetic trace: Bernoulli spikes of `amp` with probability `rate`,
    /// filtered by the AR kernel, plus white noise. Returns (y, true spikes).
    fn simulate(
        n: usize,
        g1: f64,
        g2: f64,
        rate: f64,
        amp: f64,
        noise: f64,
        seed: u64,
    ) -> (Vec<f32>, Vec<f64>) {
        let mut rng = Rng(seed);
        let spikes: Vec<f64> = (0..n)
            .map(|t| {
                if t > 0 && rng.uniform() < rate {
                    amp
                } else {
                    0.0
                }
            })
            .collect();
        let calcium = ArOperator { g1, g2 }.calcium_from_spikes(&spikes);
        let y = calcium
            .iter()
            .map(|&c| (c + noise * rng.gaussian()) as f32)
            .collect();
        (y, spikes)
    }

    /// AR impulse response h_k (h_0 = 1).
    fn impulse_response(g1: f64, g2: f64, n: usize) -> Vec<f64> {
        let mut s = vec![0.0; n];
        if n > 0 {
            s[0] = 1.0;
        }
        ArOperator { g1, g2 }.calcium_from_spikes(&s)
    }

    /// Reference solver: FISTA on `min_{s≥0} ½‖K s − y‖² + λ1ᵀs`, K the
    /// lower-triangular Toeplitz matrix of the impulse response. Returns
    /// (calcium, spikes). Independent of the production code paths.
    fn brute_force(y: &[f32], g1: f64, g2: f64, lambda: f64, iters: usize) -> (Vec<f64>, Vec<f64>) {
        let n = y.len();
        let h = impulse_response(g1, g2, n);
        let conv = |s: &[f64]| -> Vec<f64> {
            (0..n)
                .map(|t| (0..=t).map(|j| h[t - j] * s[j]).sum())
                .collect()
        };
        let lipschitz = h.iter().map(|v| v.abs()).sum::<f64>().powi(2);
        let mut s = vec![0.0; n];
        let mut z = s.clone();
        let mut momentum = 1.0f64;
        for _ in 0..iters {
            let residual: Vec<f64> = conv(&z)
                .iter()
                .zip(y)
                .map(|(c, &yy)| c - f64::from(yy))
                .collect();
            let grad: Vec<f64> = (0..n)
                .map(|j| (j..n).map(|t| h[t - j] * residual[t]).sum::<f64>() + lambda)
                .collect();
            let next: Vec<f64> = z
                .iter()
                .zip(&grad)
                .map(|(zj, gj)| (zj - gj / lipschitz).max(0.0))
                .collect();
            let next_momentum = (1.0 + (1.0 + 4.0 * momentum * momentum).sqrt()) / 2.0;
            let beta = (momentum - 1.0) / next_momentum;
            z = next
                .iter()
                .zip(&s)
                .map(|(a, b)| a + beta * (a - b))
                .collect();
            s = next;
            momentum = next_momentum;
        }
        (conv(&s), s)
    }

    fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - y).abs())
            .fold(0.0, f64::max)
    }

    /// Gaussian smoothing (σ in frames) used to compare spike trains with a
    /// tolerance for one-to-two-frame timing differences.
    fn smooth(x: &[f64], sigma: f64) -> Vec<f64> {
        let radius = (4.0 * sigma).ceil() as isize;
        (0..x.len() as isize)
            .map(|t| {
                (-radius..=radius)
                    .filter_map(|k| {
                        let u = t + k;
                        (u >= 0 && (u as usize) < x.len()).then(|| {
                            x[u as usize] * (-(k * k) as f64 / (2.0 * sigma * sigma)).exp()
                        })
                    })
                    .sum()
            })
            .collect()
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    fn to_f64(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| f64::from(v)).collect()
    }

    #[test]
    fn ar1_noiseless_recovers_spike_times_and_amplitudes() {
        let n = 200;
        let mut truth = vec![0.0; n];
        for &(t, a) in &[
            (10usize, 1.0),
            (11, 0.5),
            (40, 2.0),
            (41, 0.0),
            (120, 1.5),
            (199, 0.7),
        ] {
            truth[t] = a;
        }
        let y: Vec<f32> = ArOperator { g1: 0.9, g2: 0.0 }
            .calcium_from_spikes(&truth)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let (c, s) = oasis_ar1(&y, 0.9, 0.0, 0.0);
        assert!(max_abs_diff(&s, &truth) < 1e-4, "spikes {s:?}");
        assert!(max_abs_diff(&c, &to_f64(&y)) < 1e-4);
        // Thresholding below the smallest true spike changes nothing.
        let (_, s_thr) = oasis_ar1(&y, 0.9, 0.0, 0.3);
        assert!(max_abs_diff(&s_thr, &truth) < 1e-4);
    }

    #[test]
    fn ar1_noisy_spikes_correlate_with_truth() {
        let (y, truth) = simulate(2000, 0.95, 0.0, 0.03, 1.0, 0.2, 11);
        let (c, s) = oasis_ar1(&y, 0.95, 0.0, 0.5);
        assert_eq!((c.len(), s.len()), (2000, 2000));
        let r = correlation(&smooth(&to_f64(&s), 2.0), &smooth(&truth, 2.0));
        assert!(r > 0.8, "correlation {r}");
    }

    #[test]
    fn ar1_outputs_are_non_negative_and_full_length() {
        let (y, _) = simulate(500, 0.9, 0.0, 0.05, 1.0, 0.5, 2);
        for &(lambda, s_min) in &[(0.0, 0.0), (0.3, 0.0), (0.0, 0.4), (1.0, 1.0)] {
            let (c, s) = oasis_ar1(&y, 0.9, lambda, s_min);
            assert_eq!((c.len(), s.len()), (y.len(), y.len()));
            assert!(c.iter().chain(&s).all(|v| v.is_finite() && *v >= 0.0));
            // Thresholded variant: every spike after frame 0 is 0 or ≥ s_min.
            assert!(s[1..].iter().all(|&v| v == 0.0 || v >= s_min - 1e-5));
        }
    }

    #[test]
    fn lambda_shrinks_total_spikes() {
        let (y, _) = simulate(1000, 0.95, 0.0, 0.03, 1.0, 0.3, 4);
        let total = |lambda: f32| -> f32 { oasis_ar1(&y, 0.95, lambda, 0.0).1.iter().sum() };
        let (t0, t1, t2) = (total(0.0), total(0.2), total(1.0));
        assert!(t0 > t1 && t1 > t2, "{t0} {t1} {t2}");
        let total2 = |lambda: f32| -> f32 { oasis_ar2(&y, 1.2, -0.27, lambda, 0.0).1.iter().sum() };
        assert!(total2(0.0) > total2(0.5));
    }

    #[test]
    fn ar1_matches_brute_force_reference() {
        for (seed, lambda) in [(21u64, 0.0f32), (22, 0.3), (23, 0.0)] {
            let (y, _) = simulate(30, 0.9, 0.0, 0.15, 1.0, 0.3, seed);
            let (c, s) = oasis_ar1(&y, 0.9, lambda, 0.0);
            let (c_ref, s_ref) = brute_force(&y, 0.9, 0.0, f64::from(lambda), 30_000);
            assert!(
                max_abs_diff(&c, &c_ref) < 1e-3,
                "calcium {c:?} vs {c_ref:?}"
            );
            assert!(max_abs_diff(&s, &s_ref) < 1e-3, "spikes {s:?} vs {s_ref:?}");
        }
    }

    #[test]
    fn ar2_matches_brute_force_reference() {
        // Rise root 0.3, decay root 0.9: g1 = 1.2, g2 = −0.27.
        let (g1, g2) = (1.2, -0.27);
        for (seed, lambda) in [(31u64, 0.0f32), (32, 0.2), (33, 0.0)] {
            let (y, _) = simulate(30, g1, g2, 0.15, 1.0, 0.3, seed);
            let (c, s) = oasis_ar2(&y, g1 as f32, g2 as f32, lambda, 0.0);
            let (c_ref, s_ref) = brute_force(&y, g1, g2, f64::from(lambda), 60_000);
            assert!(
                max_abs_diff(&c, &c_ref) < 1e-3,
                "calcium {c:?} vs {c_ref:?}"
            );
            assert!(max_abs_diff(&s, &s_ref) < 1e-3, "spikes {s:?} vs {s_ref:?}");
        }
    }

    #[test]
    fn ar2_with_zero_g2_agrees_with_ar1() {
        let (y, _) = simulate(800, 0.93, 0.0, 0.04, 1.0, 0.3, 8);
        for lambda in [0.0f32, 0.25] {
            let (c1, s1) = oasis_ar1(&y, 0.93, lambda, 0.0);
            let (c2, s2) = oasis_ar2(&y, 0.93, 0.0, lambda, 0.0);
            assert!(max_abs_diff(&c1, &to_f64(&c2)) < 1e-4);
            assert!(max_abs_diff(&s1, &to_f64(&s2)) < 1e-4);
        }
    }

    #[test]
    fn ar2_noiseless_and_thresholded() {
        let (g1, g2) = ar2_from_taus(0.05, 0.5, 30.0);
        let (y, truth) = simulate(600, f64::from(g1), f64::from(g2), 0.03, 1.0, 0.0, 5);
        let (c, s) = oasis_ar2(&y, g1, g2, 0.0, 0.0);
        assert!(max_abs_diff(&s, &truth) < 1e-3);
        assert!(max_abs_diff(&c, &to_f64(&y)) < 1e-3);
        // Greedy support + exact refit is also exact when s_min is below every spike.
        let (_, s_thr) = oasis_ar2(&y, g1, g2, 0.0, 0.5);
        assert!(max_abs_diff(&s_thr, &truth) < 1e-3);

        let (y_noisy, truth) = simulate(2000, f64::from(g1), f64::from(g2), 0.03, 1.0, 0.2, 6);
        let (c, s) = oasis_ar2(&y_noisy, g1, g2, 0.0, 0.5);
        assert!(c.iter().chain(&s).all(|v| v.is_finite() && *v >= 0.0));
        assert!(s[1..].iter().all(|&v| v == 0.0 || v >= 0.5 - 1e-5));
        let r = correlation(&smooth(&to_f64(&s), 2.0), &smooth(&truth, 2.0));
        assert!(r > 0.8, "AR(2) correlation {r}");
    }

    #[test]
    fn noise_sd_recovers_white_noise_level() {
        for &sd in &[0.2f64, 3.0] {
            let mut rng = Rng(17);
            let y: Vec<f32> = (0..20_000)
                .map(|_| (5.0 + sd * rng.gaussian()) as f32)
                .collect();
            let est = f64::from(noise_sd(&y));
            assert!((est / sd - 1.0).abs() < 0.05, "sd {sd} estimated {est}");
        }
        assert_eq!(noise_sd(&[]), 0.0);
        assert_eq!(noise_sd(&[1.0]), 0.0);
    }

    #[test]
    fn estimate_ar_recovers_coefficients() {
        let (y, _) = simulate(100_000, 0.9, 0.0, 0.05, 1.0, 0.2, 13);
        let g = estimate_ar(&y, 1).expect("usable estimate");
        assert!((g[0] - 0.9).abs() < 0.03, "estimated {g:?}");
        let g2 = estimate_ar(&y, 2).expect("usable AR(2) estimate");
        // An AR(1) process seen through AR(2): the decay g1 + g2 stays near 0.9.
        assert!((g2[0] + g2[1] - 0.9).abs() < 0.05, "estimated {g2:?}");
        assert_eq!(estimate_ar(&y, 3), None);
        assert_eq!(estimate_ar(&y[..5], 1), None);
        let (gt1, gt2) = ar2_from_taus(0.1, 0.5, 30.0);
        let (y2, _) = simulate(100_000, f64::from(gt1), f64::from(gt2), 0.03, 1.0, 0.2, 14);
        let est2 = estimate_ar(&y2, 2).expect("usable AR(2) estimate");
        // Individual AR(2) roots are poorly identified from noisy data, but the
        // kernel's integral 1/(1 − g1 − g2) is; check g1 + g2 and stability.
        assert!(
            (est2[0] + est2[1] - (gt1 + gt2)).abs() < 0.01,
            "estimated {est2:?}"
        );
        assert!(
            est2[1] < 0.0 && est2[0] + est2[1] < 1.0,
            "estimated {est2:?}"
        );
        // A flat trace has no signal variance to fit.
        assert_eq!(estimate_ar(&[3.0; 100], 1), None);
    }

    #[test]
    fn tau_conversions() {
        let g = ar1_from_tau(1.0, 30.0);
        assert!((g - (-1.0f32 / 30.0).exp()).abs() < 1e-6);
        let (g1, g2) = ar2_from_taus(0.1, 1.0, 10.0);
        let (d, r) = ((-0.1f32).exp(), (-1.0f32).exp());
        assert!((g1 - (d + r)).abs() < 1e-6 && (g2 + d * r).abs() < 1e-6);
        assert_eq!(ar1_from_tau(-1.0, 30.0), 0.0);
        assert_eq!(ar1_from_tau(f32::NAN, 30.0), 0.0);
        assert_eq!(ar1_from_tau(f32::INFINITY, 30.0), 1.0);
    }

    #[test]
    fn deconvolve_end_to_end() {
        let (y, truth) = simulate(3000, 0.95, 0.0, 0.03, 1.0, 0.2, 42);
        let shifted: Vec<f32> = y.iter().map(|v| v + 10.0).collect();
        let out = deconvolve(&shifted, &[0.95], 2.5);
        assert_eq!((out.calcium.len(), out.spikes.len()), (3000, 3000));
        assert!((out.noise_sd - 0.2).abs() < 0.02, "noise {}", out.noise_sd);
        assert!(
            (out.baseline - 10.0).abs() < 0.5,
            "baseline {}",
            out.baseline
        );
        assert_eq!(out.g, vec![0.95]);
        let r = correlation(&smooth(&to_f64(&out.spikes), 2.0), &smooth(&truth, 2.0));
        assert!(r > 0.8, "correlation {r}");

        let out2 = deconvolve(&shifted, &[1.2, -0.27, 9.0], 2.5);
        assert_eq!(out2.g.len(), 2);
        assert!(out2.spikes.iter().all(|v| v.is_finite() && *v >= 0.0));
        let estimated = deconvolve(&shifted, &[], 2.5);
        assert!((estimated.g[0] - 0.95).abs() < 0.05, "g {:?}", estimated.g);
    }

    #[test]
    fn empty_and_non_finite_inputs_do_not_panic() {
        assert_eq!(oasis_ar1(&[], 0.9, 0.0, 0.0), (vec![], vec![]));
        assert_eq!(oasis_ar2(&[], 1.2, -0.3, 0.0, 0.0), (vec![], vec![]));
        let empty = deconvolve(&[], &[0.9], 2.0);
        assert!(empty.calcium.is_empty() && empty.spikes.is_empty());
        assert_eq!(estimate_ar(&[], 1), None);

        let y = [
            f32::NAN,
            1.0,
            f32::INFINITY,
            0.5,
            f32::NEG_INFINITY,
            0.2,
            f32::NAN,
        ];
        for (c, s) in [
            oasis_ar1(&y, 0.9, 0.1, 0.1),
            oasis_ar2(&y, 1.2, -0.27, 0.1, 0.1),
            oasis_ar1(&y, f32::NAN, f32::NAN, f32::INFINITY),
            oasis_ar2(&y, f32::INFINITY, f32::NAN, -1.0, f32::NAN),
            oasis_ar1(&[f32::NAN; 5], 0.9, 0.0, 0.0),
            oasis_ar2(&[f32::NAN; 5], 5.0, 5.0, 0.0, 0.0),
        ] {
            assert_eq!(c.len(), s.len());
            assert!(
                c.iter().chain(&s).all(|v| v.is_finite() && *v >= 0.0),
                "{c:?} {s:?}"
            );
        }
        let out = deconvolve(&y, &[], f32::NAN);
        assert_eq!(out.calcium.len(), y.len());
        assert!(out.calcium.iter().all(|v| v.is_finite()));
    }

    #[test]
    #[ignore = "timing report, run with --ignored --nocapture"]
    fn speed_report() {
        let (y, _) = simulate(20_000, 0.95, 0.0, 0.03, 1.0, 0.2, 77);
        let time = |f: &dyn Fn() -> (Vec<f32>, Vec<f32>)| {
            let start = std::time::Instant::now();
            let (c, _) = f();
            assert_eq!(c.len(), 20_000);
            start.elapsed()
        };
        let ar1 = time(&|| oasis_ar1(&y, 0.95, 0.0, 0.0));
        let ar1_thr = time(&|| oasis_ar1(&y, 0.95, 0.0, 0.5));
        let (g1, g2) = ar2_from_taus(0.05, 1.0, 30.0);
        let (y2, _) = simulate(20_000, f64::from(g1), f64::from(g2), 0.03, 1.0, 0.2, 78);
        let ar2 = time(&|| oasis_ar2(&y2, g1, g2, 0.0, 0.0));
        let ar2_thr = time(&|| oasis_ar2(&y2, g1, g2, 0.0, 0.5));
        println!("T=20000: oasis_ar1 {ar1:?}, ar1 s_min {ar1_thr:?}, oasis_ar2 {ar2:?}, ar2 s_min {ar2_thr:?}");
    }
}
