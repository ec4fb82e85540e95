//! Wider vector instructions for the hot loops, chosen at run time.
//!
//! Release builds target baseline x86-64 (SSE2, four f32 lanes) so that one
//! binary runs everywhere. [`wide`] runs a closure compiled with AVX2 and FMA
//! enabled when the CPU has them: LLVM inlines the closure and the `#[inline]`
//! helpers it calls into a function built for those features, so their loops use
//! eight lanes. The same operations run in the same order on either path (the
//! loops already keep explicit eight-lane accumulators, and LLVM does not fuse
//! multiplies and adds on its own), so results are bit-identical with and
//! without AVX2.

/// Run `f`, compiled for AVX2 + FMA when this CPU supports them.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only
            // requirement of a `target_feature` function.
            return unsafe { run(f) };
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wide_path_gives_the_same_bits() {
        let v: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.37)
            .collect();
        let sum = |v: &[f32]| {
            let mut acc = [0.0f32; 8];
            for c in v.chunks_exact(8) {
                for k in 0..8 {
                    acc[k] += c[k] * 1.0001 + 0.5;
                }
            }
            acc
        };
        assert_eq!(super::wide(|| sum(&v)), sum(&v));
    }
}
