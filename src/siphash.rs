//! SipHash-1-3 of a byte string with a secret key, in one pass: the hash std's maps use
//! for keys that users choose, without the `Hasher` interface's buffering, which a short
//! key would pay for at every request (the affinity table hashes one per request).

/// A secret SipHash key, drawn once per table.
#[derive(Clone, Copy, Debug)]
pub struct SipKey {
    k0: u64,
    k1: u64,
}

impl SipKey {
    /// A key from the thread's random generator (seeded by the operating system).
    pub fn random() -> SipKey {
        SipKey {
            k0: rand::random(),
            k1: rand::random(),
        }
    }

    /// The hash of `bytes` under this key.
    pub fn hash(&self, bytes: &[u8]) -> u64 {
        let mut v = [
            self.k0 ^ 0x736f_6d65_7073_6575,
            self.k1 ^ 0x646f_7261_6e64_6f6d,
            self.k0 ^ 0x6c79_6765_6e65_7261,
            self.k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let m = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            compress(&mut v, m);
        }
        let mut last = (bytes.len() as u64 & 0xff) << 56;
        for (i, &b) in words.remainder().iter().enumerate() {
            last |= u64::from(b) << (8 * i);
        }
        compress(&mut v, last);
        v[2] ^= 0xff;
        round(&mut v);
        round(&mut v);
        round(&mut v);
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    round(v);
    v[0] ^= m;
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    /// std's `DefaultHasher::new()` is SipHash-1-3 with the key (0, 0).
    #[test]
    fn agrees_with_std_siphash_1_3() {
        let zero = SipKey { k0: 0, k1: 0 };
        let text: Vec<u8> = (0..=255u8).collect();
        for len in 0..text.len() {
            let mut std = std::collections::hash_map::DefaultHasher::new();
            std.write(&text[..len]);
            assert_eq!(zero.hash(&text[..len]), std.finish(), "{len} bytes");
        }
        let (a, b) = (SipKey::random(), SipKey::random());
        assert_ne!(a.hash(b"room"), b.hash(b"room"), "a key per table");
    }
}
