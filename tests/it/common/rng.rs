//! A small deterministic generator (splitmix64) for test data, so that a failure can be
//! reproduced from its seed.
#![allow(dead_code)]

/// `Rng(seed)`: any seed, 0 included.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n`; 0 when `n` is 0.
    pub fn below<N: Copy + TryInto<u64> + TryFrom<u64>>(&mut self, n: N) -> N {
        let m: u64 = n
            .try_into()
            .unwrap_or_else(|_| unreachable!("below: n fits u64"));
        if m == 0 {
            return n;
        }
        N::try_from(self.next() % m).unwrap_or_else(|_| unreachable!("below: < n"))
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}
