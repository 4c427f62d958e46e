//! Key groups: the unit of state ownership, rescaling and restore (Flink's model).
//!
//! `key_group = reduce(hash(encoded key), max_key_groups)`. The hash is **XXH3-64 with seed 0**
//! over the codec's encoding of the key (namespaces are not part of it, so every namespace of a key
//! stays in the key's group), and `reduce(h, n) = ((h >> 32) * n) >> 32` (a multiply-shift range
//! reduction of the hash's high half). Both are part of the on-disk format: they never change
//! across versions or platforms, or a restored journal would look for keys in the wrong group.

use std::fmt;

/// Default number of key groups of a new journal.
pub const DEFAULT_MAX_KEY_GROUPS: u16 = 128;
/// Largest number of key groups a journal may have.
pub const MAX_KEY_GROUPS: u16 = 32768;

/// A key group: `0 .. max_key_groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(pub u16);

impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A contiguous range of key groups `[start, end)`, the share of the key space a journal serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    start: u16,
    end: u16,
}

impl KeyGroupRange {
    /// `[start, end)`. Empty ranges are allowed (a journal that owns nothing).
    pub fn new(start: u16, end: u16) -> KeyGroupRange {
        KeyGroupRange {
            start,
            end: end.max(start),
        }
    }

    /// Every key group of a journal with `max_key_groups` groups.
    pub fn all(max_key_groups: u16) -> KeyGroupRange {
        KeyGroupRange {
            start: 0,
            end: max_key_groups,
        }
    }

    /// First key group.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// One past the last key group.
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether `kg` is in the range.
    #[inline]
    pub fn contains(&self, kg: KeyGroup) -> bool {
        (self.start..self.end).contains(&kg.0)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// The stable hash of an encoded key: XXH3-64, seed 0.
#[inline]
pub fn key_hash(encoded_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(encoded_key)
}

/// The key group of a key whose [`key_hash`] is `hash`.
#[inline]
pub fn key_group_of(hash: u64, max_key_groups: u16) -> KeyGroup {
    KeyGroup((((hash >> 32) * u64::from(max_key_groups)) >> 32) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_group_are_pinned() {
        // These values are part of the format: if this test fails, existing journals would
        // restore keys into the wrong key groups.
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(key_hash(b"user-42"), xxhash_rust::xxh3::xxh3_64(b"user-42"));
        let h = key_hash(b"user-42");
        assert_eq!(
            key_group_of(h, 128),
            KeyGroup((((h >> 32) * 128) >> 32) as u16)
        );
        assert_eq!(key_group_of(u64::MAX, 128), KeyGroup(127));
        assert_eq!(key_group_of(0, 128), KeyGroup(0));
    }

    #[test]
    fn groups_are_spread_evenly() {
        let mut counts = vec![0u32; 128];
        for i in 0..128_000u32 {
            counts[key_group_of(key_hash(&i.to_le_bytes()), 128).0 as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 850 && *max < 1150, "uneven: {min}..{max}");
    }

    #[test]
    fn ranges() {
        let r = KeyGroupRange::new(10, 20);
        assert!(r.contains(KeyGroup(10)) && r.contains(KeyGroup(19)));
        assert!(!r.contains(KeyGroup(20)) && !r.contains(KeyGroup(9)));
        assert!(!KeyGroupRange::new(5, 3).contains(KeyGroup(4)));
        assert!(KeyGroupRange::all(128).contains(KeyGroup(127)));
    }
}
