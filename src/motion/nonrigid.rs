//! Piecewise-rigid registration (NoRMCorre, Pnevmatikakis & Giovannucci 2017; the
//! Suite2p nonrigid step).
//!
//! The frame, already corrected rigidly, is cut into overlapping square blocks;
//! each block is phase-correlated with the same block of the reference, within
//! ±`max_shift` of the rigid solution. A block whose correlation peak is weak
//! (peak-to-sidelobe ratio below a threshold) borrows its neighbours' correlation
//! surfaces (a weighted sum over the 3×3 block neighbourhood) before its peak is
//! taken, so low-contrast blocks follow their neighbours instead of noise.
//!
//! A block's correlation measures the displacement where the block's structure
//! is, not at its geometric centre: a block whose bright cells sit near one edge
//! reports the displacement there. Each block's *evidence centroid* (the centroid
//! of its band-passed reference energy inside the block's taper) is found once per
//! session, and every block shift is moved from its centroid to its centre along
//! the field's gradient across the grid (a first-order correction of our own).
//! Block shifts then become a smooth per-pixel field by bilinear interpolation
//! between block centres (extrapolated linearly beyond the outermost centres).

use super::rigid::{edge_taper_factors, peak_of_window, Correlator, Estimate, Workspace};
use crate::imgproc::gaussian_blur;

/// Where the blocks are.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockGrid {
    pub size_x: usize,
    pub size_y: usize,
    /// Top-left corners of block columns / rows.
    pub x0: Vec<usize>,
    pub y0: Vec<usize>,
}

impl BlockGrid {
    /// Blocks of `block` px (at most the frame), about 1.5 per block length so
    /// neighbours overlap by a third or more.
    pub fn new(w: usize, h: usize, block: usize) -> Self {
        let axis = |n: usize| -> (usize, Vec<usize>) {
            let size = block.min(n);
            let count = if size == n {
                1
            } else {
                ((1.5 * n as f64 / size as f64).ceil() as usize).max(2)
            };
            let starts = if count == 1 {
                vec![(n - size) / 2]
            } else {
                (0..count)
                    .map(|i| ((n - size) as f64 * i as f64 / (count - 1) as f64).round() as usize)
                    .collect()
            };
            (size, starts)
        };
        let (size_x, x0) = axis(w);
        let (size_y, y0) = axis(h);
        BlockGrid {
            size_x,
            size_y,
            x0,
            y0,
        }
    }

    pub fn n_blocks(&self) -> usize {
        self.x0.len() * self.y0.len()
    }

    /// Centre of block column `i` / row `j`, px.
    pub fn centre_x(&self, i: usize) -> f64 {
        self.x0[i] as f64 + (self.size_x as f64 - 1.0) / 2.0
    }
    pub fn centre_y(&self, j: usize) -> f64 {
        self.y0[j] as f64 + (self.size_y as f64 - 1.0) / 2.0
    }

    fn extract(&self, frame: &[f32], w: usize, bx: usize, by: usize, out: &mut [f32]) {
        let (x0, y0) = (self.x0[bx], self.y0[by]);
        for y in 0..self.size_y {
            let src = &frame[(y0 + y) * w + x0..(y0 + y) * w + x0 + self.size_x];
            out[y * self.size_x..(y + 1) * self.size_x].copy_from_slice(src);
        }
    }
}

/// Per-pixel field from one value per block (row-major over the block grid), by
/// bilinear interpolation between block centres.
pub fn block_field(grid: &BlockGrid, values: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w * h];
    FieldPlan::for_grid(grid, w, h).field_into(|k| values[k], &mut out);
    out
}

/// Per-pixel field from values at a rectilinear grid of centres (`cx` columns ×
/// `cy` rows, values row-major), bilinear inside, extrapolated linearly beyond the
/// outer centres.
pub fn field_from_centres(cx: &[f64], cy: &[f64], values: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w * h];
    FieldPlan::new(cx, cy, w, h).field_into(|k| values[k], &mut out);
    out
}

/// How a `w × h` field follows from one value per centre of a rectilinear grid,
/// worked out once (per session, for the per-frame loop): each pixel column's and
/// row's pair of centres and fraction between them, and the edge pixels where the
/// field's extremes can lie.
#[derive(Debug, Clone)]
pub struct FieldPlan {
    /// Centres per grid row (values are row-major, `nx` per row).
    nx: usize,
    /// Per pixel column, then per pixel row: [`axis_pair`].
    ax: Vec<(usize, usize, f32)>,
    ay: Vec<(usize, usize, f32)>,
    /// The pixel columns / rows where a field's extremes along an edge can lie:
    /// the edge's ends and the pixels either side of each centre.
    knots_x: Vec<usize>,
    knots_y: Vec<usize>,
}

impl FieldPlan {
    /// The plan for centres at columns `cx` and rows `cy` (px).
    pub fn new(cx: &[f64], cy: &[f64], w: usize, h: usize) -> Self {
        // Along an edge the field is piecewise linear with knots at the centres.
        let knots = |centres: &[f64], n: usize| -> Vec<usize> {
            let last = (n - 1) as f64;
            let mut k = vec![0, n - 1];
            for c in centres {
                k.extend(
                    [c.floor().clamp(0.0, last), c.ceil().clamp(0.0, last)].map(|v| v as usize),
                );
            }
            k
        };
        FieldPlan {
            nx: cx.len(),
            ax: (0..w).map(|x| axis_pair(x as f64, cx)).collect(),
            ay: (0..h).map(|y| axis_pair(y as f64, cy)).collect(),
            knots_x: knots(cx, w),
            knots_y: knots(cy, h),
        }
    }

    /// The plan for a block grid's centres.
    pub fn for_grid(grid: &BlockGrid, w: usize, h: usize) -> Self {
        let cx: Vec<f64> = (0..grid.x0.len()).map(|i| grid.centre_x(i)).collect();
        let cy: Vec<f64> = (0..grid.y0.len()).map(|j| grid.centre_y(j)).collect();
        Self::new(&cx, &cy, w, h)
    }

    /// The field of the values `value(k)` (`k` row-major over the centres) into
    /// `out` (`w × h`).
    pub fn field_into(&self, value: impl Fn(usize) -> f32, out: &mut [f32]) {
        let w = self.ax.len();
        for (row, &py) in out.chunks_exact_mut(w).zip(&self.ay) {
            for (o, &px) in row.iter_mut().zip(&self.ax) {
                *o = bilinear(&value, self.nx, px, py);
            }
        }
    }

    /// Where a frame's field reaches furthest out of the frame: the least x shift
    /// on the left edge, the largest on the right edge, the least y shift on the
    /// top edge and the largest on the bottom edge (px), for x and y shifts
    /// `xs(k)`, `ys(k)` per centre. Exact over the edges' pixels: along an edge the
    /// field is piecewise linear, so its extremes lie at the knots' pixels.
    pub fn edge_extremes(&self, xs: impl Fn(usize) -> f32, ys: impl Fn(usize) -> f32) -> [f32; 4] {
        let (w, h) = (self.ax.len(), self.ay.len());
        // The extreme of `value` over the knots of one edge, `pick` choosing.
        let extreme = |value: &dyn Fn(usize) -> f32,
                       pixels: &mut dyn Iterator<Item = (usize, usize)>,
                       pick: fn(f32, f32) -> f32,
                       start: f32| {
            pixels.fold(start, |acc, (x, y)| {
                pick(acc, bilinear(value, self.nx, self.ax[x], self.ay[y]))
            })
        };
        let (kx, ky) = (&self.knots_x, &self.knots_y);
        [
            extreme(
                &xs,
                &mut ky.iter().map(|&y| (0, y)),
                f32::min,
                f32::INFINITY,
            ),
            extreme(
                &xs,
                &mut ky.iter().map(|&y| (w - 1, y)),
                f32::max,
                f32::NEG_INFINITY,
            ),
            extreme(
                &ys,
                &mut kx.iter().map(|&x| (x, 0)),
                f32::min,
                f32::INFINITY,
            ),
            extreme(
                &ys,
                &mut kx.iter().map(|&x| (x, h - 1)),
                f32::max,
                f32::NEG_INFINITY,
            ),
        ]
    }
}

/// The two centres that position `p` interpolates between (or, beyond the outer
/// centres, extrapolates from: a smooth warp keeps its slope to the frame's
/// edge), and its fraction of the way from the first to the second.
fn axis_pair(p: f64, centres: &[f64]) -> (usize, usize, f32) {
    let count = centres.len();
    if count == 1 {
        return (0, 0, 0.0);
    }
    let mut i = 0;
    while i + 2 < count && centres[i + 1] < p {
        i += 1;
    }
    let t = (p - centres[i]) / (centres[i + 1] - centres[i]);
    (i, i + 1, t as f32)
}

#[inline]
fn bilinear<F: Fn(usize) -> f32 + ?Sized>(
    value: &F,
    nx: usize,
    (i0, i1, tx): (usize, usize, f32),
    (j0, j1, ty): (usize, usize, f32),
) -> f32 {
    let v00 = value(j0 * nx + i0);
    let v01 = value(j0 * nx + i1);
    let v10 = value(j1 * nx + i0);
    let v11 = value(j1 * nx + i1);
    let top = v00 + (v01 - v00) * tx;
    let bottom = v10 + (v11 - v10) * tx;
    top + (bottom - top) * ty
}

/// Correlators for every block of a reference.
pub struct BlockAligner {
    pub grid: BlockGrid,
    /// How the block shifts become a per-pixel field in the frame.
    pub plan: FieldPlan,
    blocks: Vec<Correlator>,
    /// Per block, its evidence centroid less its centre (x, y), px.
    evidence: Vec<(f64, f64)>,
    /// Per block, its shift at its centre as a combination of the measured shifts
    /// of its neighbourhood (see [`referral_weights`]).
    referral: Vec<Vec<(usize, f64)>>,
    snr_threshold: f64,
    width: usize,
}

/// Per-thread buffers for a [`BlockAligner`].
pub struct BlockWorkspace {
    ws: Workspace,
    block: Vec<f32>,
    surfaces: Vec<Vec<f32>>,
    estimates: Vec<Estimate>,
    /// A weak block's neighbourhood sum of correlation windows.
    borrowed: Vec<f32>,
    /// The block shifts as measured, before [`BlockAligner::referred`].
    measured: Vec<BlockShift>,
}

/// One block's shift relative to the rigid solution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockShift {
    pub x: f32,
    pub y: f32,
    pub snr: f32,
}

impl BlockAligner {
    /// Prepare block correlators for `reference`.
    pub fn new(
        reference: &[f32],
        w: usize,
        h: usize,
        block: usize,
        max_shift: usize,
        smooth_sigma: f64,
        snr_threshold: f64,
    ) -> Self {
        let grid = BlockGrid::new(w, h, block);
        let mut buf = vec![0.0; grid.size_x * grid.size_y];
        let taper_px = (grid.size_x.min(grid.size_y) as f64 / 8.0).max(2.0);
        let mut blocks = Vec::with_capacity(grid.n_blocks());
        for by in 0..grid.y0.len() {
            for bx in 0..grid.x0.len() {
                grid.extract(reference, w, bx, by, &mut buf);
                blocks.push(Correlator::new(
                    &buf,
                    grid.size_x,
                    grid.size_y,
                    max_shift,
                    smooth_sigma,
                    taper_px,
                ));
            }
        }
        let evidence = evidence_offsets(&grid, reference, w, h, smooth_sigma, taper_px);
        BlockAligner {
            plan: FieldPlan::for_grid(&grid, w, h),
            referral: referral_weights(&grid, &evidence),
            evidence,
            grid,
            blocks,
            snr_threshold,
            width: w,
        }
    }

    /// Per block, its evidence centroid less its centre (x, y), px.
    pub fn evidence_offsets(&self) -> &[(f64, f64)] {
        &self.evidence
    }

    /// Fresh per-thread buffers.
    pub fn workspace(&self) -> BlockWorkspace {
        BlockWorkspace {
            ws: self.blocks[0].workspace(),
            block: vec![0.0; self.grid.size_x * self.grid.size_y],
            surfaces: vec![Vec::new(); self.grid.n_blocks()],
            estimates: vec![Estimate::NONE; self.grid.n_blocks()],
            borrowed: Vec::new(),
            measured: Vec::with_capacity(self.grid.n_blocks()),
        }
    }

    /// Block shifts of a rigidly corrected frame (row-major over the grid).
    pub fn estimate(&self, frame: &[f32], bw: &mut BlockWorkspace) -> Vec<BlockShift> {
        let (nx, ny) = (self.grid.x0.len(), self.grid.y0.len());
        let m = self.blocks[0].max_shift;
        // The correlation window of every block, one ring wider than the bound.
        let half = self.blocks[0].window_half();
        let side = 2 * half + 1;
        for by in 0..ny {
            for bx in 0..nx {
                let k = by * nx + bx;
                self.grid.extract(frame, self.width, bx, by, &mut bw.block);
                let var = self.blocks[k].surface(&bw.block, &mut bw.ws);
                let win = &mut bw.surfaces[k];
                win.clear();
                win.extend_from_slice(&bw.ws.window);
                // A confident block's sub-pixel peak comes from its own spectrum,
                // like the rigid step's; weak blocks are resolved below. A flat
                // block (no variance: a dark or saturated region) has an all-zero
                // window, whose "peak" means nothing: it must borrow.
                let mut e = peak_of_window(win, half, m, m);
                if !(var > 0.0) {
                    e.snr = 0.0;
                }
                if e.snr >= self.snr_threshold {
                    let limit = m as f64 + 0.5;
                    (e.x, e.y) = self.blocks[k].refine_peak(&mut bw.ws, e.x, e.y, limit);
                }
                bw.estimates[k] = e;
            }
        }
        let BlockWorkspace {
            estimates: raw,
            surfaces,
            borrowed: acc,
            measured,
            ..
        } = bw;
        measured.clear();
        measured.extend(
            (0..ny)
                .flat_map(|by| (0..nx).map(move |bx| (bx, by)))
                .map(|(bx, by)| {
                    let k = by * nx + bx;
                    let e = if raw[k].snr >= self.snr_threshold {
                        raw[k]
                    } else {
                        // Borrow the neighbourhood's evidence: centre weight 1, edges ½, corners ¼.
                        acc.clear();
                        acc.resize(side * side, 0.0);
                        for j in by.saturating_sub(1)..=(by + 1).min(ny - 1) {
                            for i in bx.saturating_sub(1)..=(bx + 1).min(nx - 1) {
                                let wgt = 1.0 / (1 << (i.abs_diff(bx) + j.abs_diff(by))) as f32;
                                for (a, v) in acc.iter_mut().zip(&surfaces[j * nx + i]) {
                                    *a += wgt * v;
                                }
                            }
                        }
                        if acc.iter().all(|&v| v == 0.0) {
                            // Nothing around it to borrow from either: keep the rigid shift.
                            Estimate::NONE
                        } else {
                            peak_of_window(acc, half, m, m)
                        }
                    };
                    BlockShift {
                        x: e.x as f32,
                        y: e.y as f32,
                        snr: raw[k].snr.min(1e6) as f32,
                    }
                }),
        );
        self.referred(measured)
    }

    /// Every confident block's shift moved from its evidence centroid to its
    /// centre with the weights of [`referral_weights`]. A block is left as
    /// measured when it or a neighbour in its fit is weak (below the SNR
    /// threshold: borrowed, flat or without a peak), since those values are
    /// stand-ins, not measurements where the fit assumes them.
    fn referred(&self, measured: &[BlockShift]) -> Vec<BlockShift> {
        measured
            .iter()
            .zip(&self.referral)
            .map(|(&s, weights)| {
                let weak = |j: usize| (measured[j].snr as f64) < self.snr_threshold;
                if weights.iter().any(|&(j, _)| weak(j)) {
                    return s;
                }
                let (x, y) = weights.iter().fold((0.0, 0.0), |a, &(j, c)| {
                    (
                        a.0 + c * measured[j].x as f64,
                        a.1 + c * measured[j].y as f64,
                    )
                });
                BlockShift {
                    x: x as f32,
                    y: y as f32,
                    ..s
                }
            })
            .collect()
    }
}

/// Per block, the weights that give its shift at its centre from the shifts
/// measured at the evidence centroids of its 3 × 3 neighbourhood:
/// `s_k − ∇s · (centroid_k − centre_k)`, with `∇s` the slopes of the
/// least-squares plane through the neighbourhood's shifts placed at their
/// centroids. The slopes are linear in the shifts, so this is a fixed weighted
/// sum, worked out once per session; a linear field comes back exactly.
///
/// A slope is left out (held at zero) along an axis with one block, or where the
/// neighbourhood's centroids spread (root mean square) less than an eighth of the
/// block's side along it (neighbouring centres are at least a third of a side
/// apart on any grid of more than one block along an axis that is not much
/// larger than a block), so that measurement noise is never divided by a short
/// distance (a frame barely larger than a block puts the centres a pixel apart);
/// both are when the centroids lie too near a line to fix a plane. A block
/// with no slope keeps its own shift: `[(k, 1)]`.
fn referral_weights(grid: &BlockGrid, evidence: &[(f64, f64)]) -> Vec<Vec<(usize, f64)>> {
    let (nx, ny) = (grid.x0.len(), grid.y0.len());
    let (least_x, least_y) = (grid.size_x as f64 / 8.0, grid.size_y as f64 / 8.0);
    (0..nx * ny)
        .map(|k| {
            let (bx, by) = (k % nx, k / nx);
            let mut pts: Vec<(usize, f64, f64)> = Vec::with_capacity(9);
            for j in by.saturating_sub(1)..=(by + 1).min(ny - 1) {
                for i in bx.saturating_sub(1)..=(bx + 1).min(nx - 1) {
                    let n = j * nx + i;
                    let (ox, oy) = evidence[n];
                    pts.push((n, grid.centre_x(i) + ox, grid.centre_y(j) + oy));
                }
            }
            let count = pts.len() as f64;
            let (mx, my) = pts
                .iter()
                .fold((0.0, 0.0), |a, p| (a.0 + p.1 / count, a.1 + p.2 / count));
            let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
            for p in &pts {
                let (dx, dy) = (p.1 - mx, p.2 - my);
                sxx += dx * dx;
                sxy += dx * dy;
                syy += dy * dy;
            }
            let free_x = nx > 1 && sxx >= count * least_x * least_x;
            let free_y = ny > 1 && syy >= count * least_y * least_y;
            // Slope weights: ∇s = Σ_j (a_j, b_j)·s_j over the neighbourhood.
            let slope_weights = |dx: f64, dy: f64| -> (f64, f64) {
                match (free_x, free_y) {
                    (true, true) => {
                        let det = sxx * syy - sxy * sxy;
                        if det > 0.1 * sxx * syy {
                            ((syy * dx - sxy * dy) / det, (sxx * dy - sxy * dx) / det)
                        } else {
                            (0.0, 0.0)
                        }
                    }
                    (true, false) => (dx / sxx, 0.0),
                    (false, true) => (0.0, dy / syy),
                    (false, false) => (0.0, 0.0),
                }
            };
            let (ox, oy) = evidence[k];
            let weights: Vec<(usize, f64)> = pts
                .iter()
                .map(|&(n, x, y)| {
                    let (a, b) = slope_weights(x - mx, y - my);
                    let own = if n == k { 1.0 } else { 0.0 };
                    (n, own - ox * a - oy * b)
                })
                .collect();
            if weights
                .iter()
                .all(|&(n, c)| c == if n == k { 1.0 } else { 0.0 })
            {
                vec![(k, 1.0)]
            } else {
                weights
            }
        })
        .collect()
}

/// Per block of `grid`, where its correlation's evidence lies relative to its
/// centre: the centroid of the reference's band-passed energy (a difference of
/// Gaussians of s.d. σ and 3.5σ, squared), weighted by the block's taper.
fn evidence_offsets(
    grid: &BlockGrid,
    reference: &[f32],
    w: usize,
    h: usize,
    smooth_sigma: f64,
    taper_px: f64,
) -> Vec<(f64, f64)> {
    let fine = gaussian_blur(reference, w, h, smooth_sigma);
    let coarse = gaussian_blur(reference, w, h, 3.5 * smooth_sigma);
    let energy: Vec<f64> = fine
        .iter()
        .zip(&coarse)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .collect();
    // A block with next to none of the frame's typical energy is flat: what it
    // has leaks in from its neighbours' structure through the blur.
    let flat_below = 1e-3 * energy.iter().sum::<f64>() / energy.len() as f64
        * (grid.size_x * grid.size_y) as f64;
    let (tx, ty) = edge_taper_factors(grid.size_x, grid.size_y, taper_px);
    let mut out = Vec::with_capacity(grid.n_blocks());
    for &y0 in &grid.y0 {
        for &x0 in &grid.x0 {
            let (mut sum, mut sx, mut sy) = (0.0, 0.0, 0.0);
            for (y, &wy) in ty.iter().enumerate() {
                let row = &energy[(y0 + y) * w + x0..(y0 + y) * w + x0 + grid.size_x];
                for (x, (&e, &wx)) in row.iter().zip(&tx).enumerate() {
                    let m = e * (wx * wy) as f64;
                    sum += m;
                    sx += m * x as f64;
                    sy += m * y as f64;
                }
            }
            out.push(if sum > flat_below && sum.is_finite() {
                (
                    sx / sum - (grid.size_x as f64 - 1.0) / 2.0,
                    sy / sum - (grid.size_y as f64 - 1.0) / 2.0,
                )
            } else {
                (0.0, 0.0) // a flat block: no evidence anywhere, take its centre
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_extremes_are_those_of_the_whole_field_on_each_edge() {
        let (w, h) = (150, 97);
        let grid = BlockGrid::new(w, h, 48);
        let n = grid.n_blocks();
        let xs: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let ys: Vec<f32> = (0..n).map(|i| ((i * 3) % 7) as f32 * 0.5 - 1.5).collect();
        let (fx, fy) = (block_field(&grid, &xs, w, h), block_field(&grid, &ys, w, h));
        let col = |f: &[f32], x: usize| (0..h).map(|y| f[y * w + x]).collect::<Vec<f32>>();
        let row = |f: &[f32], y: usize| f[y * w..(y + 1) * w].to_vec();
        let min = |v: Vec<f32>| v.into_iter().fold(f32::INFINITY, f32::min);
        let max = |v: Vec<f32>| v.into_iter().fold(f32::NEG_INFINITY, f32::max);
        let want = [
            min(col(&fx, 0)),
            max(col(&fx, w - 1)),
            min(row(&fy, 0)),
            max(row(&fy, h - 1)),
        ];
        let got = FieldPlan::for_grid(&grid, w, h).edge_extremes(|k| xs[k], |k| ys[k]);
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn a_blocks_evidence_lies_where_its_structure_is() {
        // One 64 px block whose cells all lie in its right third.
        let (w, h) = (64, 64);
        let cells = crate::motion::rigid::tests::texture(w, h);
        let reference: Vec<f32> = (0..w * h)
            .map(|i| if i % w >= 44 { cells[i] } else { 100.0 })
            .collect();
        let aligner = BlockAligner::new(&reference, w, h, 64, 4, 1.15, 1.2);
        let (ox, oy) = aligner.evidence_offsets()[0];
        assert!(ox > 15.0 && ox < 25.0, "x offset {ox}");
        assert!(oy.abs() < 6.0, "y offset {oy}");
        // The same along y: cells in the top third only.
        let top: Vec<f32> = (0..w * h)
            .map(|i| if i / w < 20 { cells[i] } else { 100.0 })
            .collect();
        let (ox, oy) = BlockAligner::new(&top, w, h, 64, 4, 1.15, 1.2).evidence_offsets()[0];
        assert!(oy < -15.0 && oy > -25.0, "y offset {oy}");
        assert!(ox.abs() < 6.0, "x offset {ox}");
        // No structure at all, or no finite values: the centre.
        for blank in [vec![0.0; w * h], vec![f32::NAN; w * h]] {
            let flat = BlockAligner::new(&blank, w, h, 64, 4, 1.15, 1.2);
            assert_eq!(flat.evidence_offsets()[0], (0.0, 0.0));
        }
    }

    #[test]
    fn shifts_measured_off_centre_are_referred_to_the_block_centres() {
        // Cells only in some diagonal bands of the field, so most blocks' evidence
        // lies off their centres; a linear field read at those centroids must come
        // back exactly to its values at the centres.
        let (w, h) = (160, 128);
        let aligner = BlockAligner::new(&banded(w, h), w, h, 48, 4, 1.15, 1.2);
        let g = &aligner.grid;
        let nx = g.x0.len();
        let field = |x: f64, y: f64| (0.3 + 0.012 * x - 0.008 * y, -0.2 + 0.006 * x + 0.01 * y);
        let off = aligner.evidence_offsets();
        assert!(off.iter().any(|o| o.0.abs() > 3.0 || o.1.abs() > 3.0));
        let mut shifts: Vec<BlockShift> = (0..g.n_blocks())
            .map(|k| {
                let (x, y) = field(g.centre_x(k % nx) + off[k].0, g.centre_y(k / nx) + off[k].1);
                BlockShift {
                    x: x as f32,
                    y: y as f32,
                    snr: 2.0,
                }
            })
            .collect();
        let error = |s: &[BlockShift]| -> f64 {
            s.iter()
                .enumerate()
                .map(|(k, b)| {
                    let (x, y) = field(g.centre_x(k % nx), g.centre_y(k / nx));
                    (b.x as f64 - x).hypot(b.y as f64 - y)
                })
                .fold(0.0, f64::max)
        };
        let before = error(&shifts);
        shifts = aligner.referred(&shifts);
        let after = error(&shifts);
        assert!(before > 0.05, "the offsets must matter: {before}");
        assert!(after < 1e-4, "largest error {before} -> {after}");
    }

    /// A reference with cells only in diagonal bands, so that most blocks'
    /// evidence lies off their centres.
    fn banded(w: usize, h: usize) -> Vec<f32> {
        let cells = crate::motion::rigid::tests::texture(w, h);
        (0..w * h)
            .map(|i| {
                if ((i % w) / 20 + (i / w) / 24).is_multiple_of(3) {
                    cells[i]
                } else {
                    100.0
                }
            })
            .collect()
    }

    #[test]
    fn referring_to_the_centres_brings_a_linearly_warped_frames_shifts_closer() {
        // The frame is the reference displaced by a field that grows linearly
        // across it, so each block reports the field where its cells are, up to a
        // few tenths of a pixel from the value at its centre. (Both estimates share
        // the taper's pull towards zero, a few per cent of the shift.)
        let (w, h) = (192, 192);
        let reference = banded(w, h);
        let field = |x: f64, y: f64| (0.02 * (x - 96.0), -0.015 * (y - 96.0));
        let (dx, dy): (Vec<f32>, Vec<f32>) = (0..w * h)
            .map(|i| {
                let (fx, fy) = field((i % w) as f64, (i / w) as f64);
                (-fx as f32, -fy as f32)
            })
            .unzip();
        let mut frame = vec![0.0; w * h];
        crate::motion::interp::warp_image(&reference, w, h, &dx, &dy, &mut frame);
        let referred = BlockAligner::new(&reference, w, h, 48, 4, 1.15, 1.2);
        let mut as_measured = BlockAligner::new(&reference, w, h, 48, 4, 1.15, 1.2);
        as_measured.referral = (0..as_measured.grid.n_blocks())
            .map(|k| vec![(k, 1.0)])
            .collect();
        let rms_error = |a: &BlockAligner| -> f64 {
            let shifts = a.estimate(&frame, &mut a.workspace());
            let g = &a.grid;
            let nx = g.x0.len();
            let sq: f64 = shifts
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let (tx, ty) = field(g.centre_x(k % nx), g.centre_y(k / nx));
                    (s.x as f64 - tx).powi(2) + (s.y as f64 - ty).powi(2)
                })
                .sum();
            (sq / shifts.len() as f64).sqrt()
        };
        let (before, after) = (rms_error(&as_measured), rms_error(&referred));
        // Measured: 0.194 -> 0.161 px; what remains is mostly the taper's pull.
        assert!(
            after < 0.9 * before,
            "rms error at the centres {before} -> {after}"
        );
    }

    #[test]
    fn blocks_a_pixel_apart_keep_their_measured_shifts() {
        // A 65 px frame with 64 px blocks: a 2 × 2 grid whose centres are 1 px
        // apart, where a fitted gradient would be noise over a pixel.
        let (w, h) = (65, 65);
        let aligner = BlockAligner::new(&banded(w, h), w, h, 64, 4, 1.15, 1.2);
        assert_eq!(aligner.grid.n_blocks(), 4);
        let measured: Vec<BlockShift> = [0.1f32, -0.3, 0.25, 0.0]
            .iter()
            .map(|&v| BlockShift {
                x: v,
                y: -v,
                snr: 3.0,
            })
            .collect();
        let mut shifts = measured.clone();
        shifts = aligner.referred(&shifts);
        assert_eq!(shifts, measured);
    }

    #[test]
    fn a_single_row_of_blocks_is_referred_along_x_only() {
        // One block row: the slope along y is held at zero, the one along x fitted.
        let (w, h) = (160, 40);
        let aligner = BlockAligner::new(&banded(w, h), w, h, 48, 4, 1.15, 1.2);
        let g = &aligner.grid;
        assert_eq!(g.y0.len(), 1);
        let off = aligner.evidence_offsets();
        assert!(off.iter().any(|o| o.0.abs() > 3.0));
        let field = |x: f64| 0.3 + 0.01 * x;
        let mut shifts: Vec<BlockShift> = (0..g.n_blocks())
            .map(|k| BlockShift {
                x: field(g.centre_x(k) + off[k].0) as f32,
                y: 0.5,
                snr: 3.0,
            })
            .collect();
        shifts = aligner.referred(&shifts);
        for (k, s) in shifts.iter().enumerate() {
            assert!(
                (s.x as f64 - field(g.centre_x(k))).abs() < 1e-4,
                "block {k}: {s:?}"
            );
            assert_eq!(s.y, 0.5);
        }
    }

    #[test]
    fn a_weak_neighbour_leaves_a_block_as_measured() {
        let (w, h) = (160, 128);
        let aligner = BlockAligner::new(&banded(w, h), w, h, 48, 4, 1.15, 1.2);
        let n = aligner.grid.n_blocks();
        let measured: Vec<BlockShift> = (0..n)
            .map(|k| BlockShift {
                x: 0.05 * k as f32,
                y: -0.03 * k as f32,
                snr: if k == 0 { 0.5 } else { 3.0 },
            })
            .collect();
        let mut shifts = measured.clone();
        shifts = aligner.referred(&shifts);
        // Block 0 is weak: it and the blocks whose fits include it keep their values;
        // a block away from it does not.
        let nx = aligner.grid.x0.len();
        for k in [0, 1, nx, nx + 1] {
            assert_eq!(shifts[k], measured[k], "block {k}");
        }
        let far = (0..n)
            .find(|&k| (k % nx > 1 || k / nx > 1) && aligner.referral[k].len() > 1)
            .expect("a referred block away from block 0");
        assert_ne!(shifts[far], measured[far], "block {far}");
    }

    #[test]
    fn grid_covers_the_frame_with_overlap() {
        let g = BlockGrid::new(512, 512, 128);
        assert_eq!(g.x0.len(), 6);
        assert_eq!(g.x0[0], 0);
        assert_eq!(*g.x0.last().unwrap() + g.size_x, 512);
        let small = BlockGrid::new(60, 40, 128);
        assert_eq!((small.size_x, small.size_y, small.n_blocks()), (60, 40, 1));
    }

    #[test]
    fn a_flat_block_follows_its_neighbours_instead_of_the_window_corner() {
        // Textured everywhere except a constant top-left corner that covers the
        // first block entirely; the frame equals the reference, so every block's
        // shift is zero.
        let (w, h) = (96, 96);
        let mut reference: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                100.0
                    + 30.0 * (x * 0.7).sin() * (y * 0.45).cos()
                    + 20.0 * (x * 0.23 + y * 0.31).sin()
            })
            .collect();
        for y in 0..40 {
            for x in 0..40 {
                reference[y * w + x] = 100.0;
            }
        }
        let aligner = BlockAligner::new(&reference, w, h, 32, 4, 1.15, 1.2);
        let mut bw = aligner.workspace();
        let shifts = aligner.estimate(&reference, &mut bw);
        let flat = shifts[0];
        assert!(
            flat.x.abs() < 0.25 && flat.y.abs() < 0.25,
            "flat block: {flat:?}"
        );
        assert_eq!(flat.snr, 0.0);
        // A frame that is flat everywhere keeps the rigid solution in every block.
        let blank = vec![100.0f32; w * h];
        for s in aligner.estimate(&blank, &mut bw) {
            assert_eq!((s.x, s.y), (0.0, 0.0));
        }
    }

    #[test]
    fn block_field_reproduces_a_linear_field_up_to_the_frame_edges() {
        let g = BlockGrid::new(100, 80, 50);
        let nx = g.x0.len();
        // value = 0.1·x − 0.05·y at each block centre.
        let values: Vec<f32> = (0..g.n_blocks())
            .map(|k| (0.1 * g.centre_x(k % nx) - 0.05 * g.centre_y(k / nx)) as f32)
            .collect();
        let f = block_field(&g, &values, 100, 80);
        for (x, y) in [(0, 0), (99, 0), (0, 79), (99, 79), (50, 40), (3, 77)] {
            let want = 0.1 * x as f32 - 0.05 * y as f32;
            assert!(
                (f[y * 100 + x] - want).abs() < 1e-4,
                "({x},{y}): {}",
                f[y * 100 + x]
            );
        }
    }
}
