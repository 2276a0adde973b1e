//! A hasher for keys that are hashes (or sequence numbers) already, for the
//! aggregator's key indexes and delivery's maps keyed by hash. No state beyond
//! the one word being hashed.

/// Hasher for keys that are hashes (or sequence numbers) already: their low bits
/// are used as they are, sparing a SipHash per record on the hot path.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by the integer keys below; a fallback that stays correct.
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        // Spread sequential keys over the table's buckets.
        self.0 = v.wrapping_mul(0x9E3779B97F4A7C15);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64((v as u64) ^ ((v >> 64) as u64));
    }
}

/// Builds [`KeyHasher`]s.
pub type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;
