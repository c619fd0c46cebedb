//! What unit tests share.

/// A deterministic uniform draw in `[-0.5, 0.5)` (an LCG), so tests need no random crate.
pub fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
}
