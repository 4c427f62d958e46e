//! The slot index of a [`Table`](super::Table): Robin Hood linear probing in segments, found
//! through a directory by the top bits of the fingerprint (extendible hashing).
//!
//! A single open-addressing array doubles all at once: every slot is re-placed, and the write
//! that triggers it waits (235 ms at 7.3 M entries on the 2-core VM, longer beyond). Here the
//! index is a directory of `2^depth` entries naming segments; a segment of local depth `d`
//! holds the keys whose fingerprints share its top `d` bits, and is an ordinary Robin Hood
//! table over the fingerprint's next bits. A segment that fills doubles while it is smaller
//! than [`SEG_MAX`] slots, and otherwise splits in two by its next fingerprint bit (the
//! directory doubling first if the segment's depth is the directory's). Growth therefore
//! re-places at most `SEG_MAX * 7/8` slots at a time (about 917 K: 25 ms on the 2-core VM),
//! however large the table: with 8 M keys the longest update measured 52 ms, against 235 ms
//! for the doubling of one array at 7.3 M (`probes/jlat`, an update loop with a stall catcher).
//!
//! A probe reads the directory (a few KiB at most, in cache) and the segment's header before its
//! slot: two loads that hit the cache. The bits the directory and the home index take from the
//! fingerprint sum to log2 of the slot count, as for one array, so fingerprints still rule out
//! other keys but for a 2^-(32 - log2(slots)) chance per probed slot.
//!
//! Positions (`Pos`) pack a segment index and a slot index: `segment << 32 | slot`.

use std::mem;
use std::ops::{Index, IndexMut};

use super::{Slot, EMPTY_SLOT, MIN_SLOTS};
use crate::hint::advise_huge_pages;

/// Largest segment, in slots: 3 MiB of slots, re-placed in a few milliseconds. Small in unit
/// tests so that they split segments often.
#[cfg(not(test))]
pub(super) const SEG_MAX: usize = 1 << 20;
#[cfg(test)]
pub(super) const SEG_MAX: usize = 256;

/// A slot's position: segment index in the high 32 bits, slot index in the low 32.
pub(super) type Pos = usize;

#[inline]
fn pos(seg: usize, i: usize) -> Pos {
    (seg << 32) | i
}

#[inline]
fn split_pos(p: Pos) -> (usize, usize) {
    (p >> 32, p & 0xFFFF_FFFF)
}

/// A transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// One Robin Hood table over the fingerprints whose top `depth` bits are its directory prefix.
#[derive(Debug, Clone)]
pub(super) struct Seg {
    /// `slots[base..]` are the segment's slots; `slots[..base]` is padding that puts them at a
    /// huge-page boundary (see [`Seg::with_slots`]).
    slots: Vec<Slot>,
    base: usize,
    /// Top fingerprint bits the directory consumed for this segment.
    depth: u32,
    /// `32 - log2(slots.len())`: turns the remaining fingerprint bits into a home index.
    shift: u32,
    /// Occupied slots.
    len: usize,
}

impl Seg {
    /// A segment of `n` free slots. Arrays of two huge pages or more start at a huge-page
    /// boundary, so that every 2 MiB of them is one huge page (one TLB entry): the allocator
    /// only aligns them to 4 KiB, and the kernel backs with huge pages only the aligned 2 MiB
    /// blocks inside, five of six for a 12 MiB array at best. The padding before the boundary (under
    /// 2 MiB, in small pages) is the price.
    fn with_slots(n: usize, depth: u32) -> Seg {
        debug_assert!(n.is_power_of_two() && n >= MIN_SLOTS);
        let size = mem::size_of::<Slot>();
        let (mut slots, base) = if n * size >= 2 * HUGE_PAGE {
            let v: Vec<Slot> = Vec::with_capacity(n + HUGE_PAGE / size + 1);
            let start = v.as_ptr() as usize;
            let base = (start.next_multiple_of(HUGE_PAGE) - start).div_ceil(size);
            (v, base)
        } else {
            (Vec::with_capacity(n), 0)
        };
        advise_huge_pages(slots.spare_capacity_mut());
        slots.resize(base + n, EMPTY_SLOT);
        Seg {
            slots,
            base,
            depth,
            shift: 32 - n.trailing_zeros(),
            len: 0,
        }
    }

    /// Number of slots.
    #[inline]
    fn n(&self) -> usize {
        self.slots.len() - self.base
    }

    /// The slots.
    #[inline]
    fn arr(&self) -> &[Slot] {
        &self.slots[self.base..]
    }

    #[inline]
    fn arr_mut(&mut self) -> &mut [Slot] {
        &mut self.slots[self.base..]
    }

    /// The home index of fingerprint `fp`: the bits after the directory's.
    #[inline]
    pub(super) fn home(&self, fp: u32) -> usize {
        let rest = (u64::from(fp) << self.depth) & 0xFFFF_FFFF;
        (rest >> self.shift) as usize
    }

    #[inline]
    pub(super) fn mask(&self) -> usize {
        self.n() - 1
    }

    /// How far slot `i`, holding fingerprint `fp`, is from its home.
    #[inline]
    pub(super) fn dist(&self, i: usize, fp: u32) -> usize {
        i.wrapping_sub(self.home(fp)) & self.mask()
    }

    #[inline]
    pub(super) fn slot(&self, i: usize) -> Slot {
        self.slots[self.base + i]
    }

    /// Where slot `i` is, for a prefetch (reads nothing; `None` past the end).
    #[inline]
    pub(super) fn slot_ptr(&self, i: usize) -> Option<*const Slot> {
        self.slots.get(self.base + i).map(std::ptr::from_ref)
    }

    /// Robin Hood insertion of `slot`, starting at `i`, `dist` slots from its home.
    #[inline]
    fn place_at(&mut self, mut i: usize, mut dist: usize, mut slot: Slot) {
        let mask = self.mask();
        let base = self.base;
        loop {
            let s = self.slots[base + i];
            if s.is_empty() {
                self.slots[base + i] = slot;
                self.len += 1;
                return;
            }
            let d = self.dist(i, s.fp);
            if d < dist {
                self.slots[base + i] = slot;
                slot = s;
                dist = d;
            }
            i = (i + 1) & mask;
            dist += 1;
        }
    }

    fn place(&mut self, slot: Slot) {
        let home = self.home(slot.fp);
        self.place_at(home, 0, slot);
    }
}

/// The segmented slot index.
#[derive(Debug, Clone, Default)]
pub(super) struct Slots {
    segs: Vec<Seg>,
    /// `2^depth` segment indices, by the fingerprint's top `depth` bits.
    dir: Vec<u32>,
    depth: u32,
    /// Segment rebuilds (doublings, splits, shrinks).
    rebuilds: u64,
}

impl Slots {
    /// An index sized for `entries` within the maximum load of 7/8 (none for zero): one segment
    /// up to [`SEG_MAX`] slots, else as many full-size segments as needed.
    pub(super) fn for_entries(entries: usize) -> Slots {
        let mut total = super::slots_for(entries);
        if total == 0 {
            return Slots::default();
        }
        if total > SEG_MAX {
            // Keys spread over the segments only on average: leave four standard deviations of
            // room in each, so that loading the announced entries splits nothing.
            let expected = entries as f64 / (total / SEG_MAX) as f64;
            if expected + 4.0 * expected.sqrt() > (SEG_MAX * 7 / 8) as f64 {
                total *= 2;
            }
        }
        let n_segs = (total / SEG_MAX).max(1);
        let per = total / n_segs;
        let depth = n_segs.trailing_zeros();
        Slots {
            segs: (0..n_segs).map(|_| Seg::with_slots(per, depth)).collect(),
            dir: (0..n_segs as u32).collect(),
            depth,
            rebuilds: 0,
        }
    }

    /// Total slots (zero for an index that has none yet).
    pub(super) fn len(&self) -> usize {
        self.segs.iter().map(Seg::n).sum()
    }

    /// Whether no slot array exists yet.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Segment rebuilds so far.
    pub(super) fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Heap bytes held (capacities).
    pub(super) fn heap_bytes(&self) -> usize {
        self.segs
            .iter()
            .map(|s| s.slots.capacity() * mem::size_of::<Slot>())
            .sum::<usize>()
            + self.segs.capacity() * mem::size_of::<Seg>()
            + self.dir.capacity() * mem::size_of::<u32>()
    }

    /// Every slot, segment by segment.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.segs.iter().flat_map(|s| s.arr().iter())
    }

    /// The segment holding fingerprint `fp` and its index (`None` before the first insertion).
    #[inline]
    pub(super) fn seg_for(&self, fp: u32) -> Option<(usize, &Seg)> {
        let d = *self
            .dir
            .get((u64::from(fp) >> (32 - self.depth)) as usize)? as usize;
        self.segs.get(d).map(|s| (d, s))
    }

    /// The position of slot `i` of segment `seg`.
    #[inline]
    pub(super) fn pos(seg: usize, i: usize) -> Pos {
        pos(seg, i)
    }

    /// Where a Robin Hood insertion of fingerprint `fp`, known to be absent, starts, and its
    /// distance there (the index must have room: see [`Slots::make_room`]).
    pub(super) fn vacant(&self, fp: u32) -> (Pos, usize) {
        let Some((si, seg)) = self.seg_for(fp) else {
            return (0, 0);
        };
        let mask = seg.mask();
        let mut i = seg.home(fp);
        let mut dist = 0;
        loop {
            let s = seg.slot(i);
            if s.is_empty() || seg.dist(i, s.fp) < dist {
                return (pos(si, i), dist);
            }
            i = (i + 1) & mask;
            dist += 1;
        }
    }

    /// Whether inserting one more key into the segment of position `p` (from a probe of a
    /// non-empty index) needs [`Slots::make_room`] first: it would pass the maximum load of 7/8.
    #[inline]
    pub(super) fn full_at(&self, p: Pos) -> bool {
        let seg = &self.segs[split_pos(p).0];
        (seg.len + 1) * 8 > seg.n() * 7
    }

    /// Makes room for one more fingerprint `fp`: creates the first segment, or doubles the
    /// segment `fp` falls in, or (at [`SEG_MAX`]) splits it. Positions change.
    #[cold]
    #[inline(never)]
    pub(super) fn make_room(&mut self, fp: u32) {
        self.rebuilds += 1;
        let Some((si, seg)) = self.seg_for(fp) else {
            *self = Slots {
                segs: vec![Seg::with_slots(MIN_SLOTS, 0)],
                dir: vec![0],
                depth: 0,
                rebuilds: self.rebuilds,
            };
            return;
        };
        let n = seg.n();
        if n < SEG_MAX {
            let mut fresh = Seg::with_slots(n * 2, seg.depth);
            let old = mem::replace(&mut self.segs[si], Seg::with_slots(MIN_SLOTS, 0));
            for &s in old.arr() {
                if !s.is_empty() {
                    fresh.place(s);
                }
            }
            self.segs[si] = fresh;
            return;
        }
        // Split: the directory doubles first if this segment uses all of its bits.
        let d = seg.depth;
        assert!(d < 32, "state table: more than 2^32 segments");
        if d == self.depth {
            self.dir = self.dir.iter().flat_map(|&x| [x, x]).collect();
            self.depth += 1;
        }
        // The directory entries naming this segment are consecutive; the upper half of them now
        // names the new one (the fingerprints whose bit after the top `d` is set).
        let width = 1usize << (self.depth - d - 1);
        let first = self
            .dir
            .iter()
            .position(|&x| x as usize == si)
            .unwrap_or_else(|| unreachable!("state table: a segment is not in the directory"));
        let ti = self.segs.len();
        for e in &mut self.dir[first + width..first + 2 * width] {
            *e = len32(ti);
        }
        let old = mem::replace(&mut self.segs[si], Seg::with_slots(n, d + 1));
        self.segs.push(Seg::with_slots(n, d + 1));
        for &s in old.arr() {
            if !s.is_empty() {
                let bit = (u64::from(s.fp) << d) & 0x8000_0000 != 0;
                self.segs[if bit { ti } else { si }].place(s);
            }
        }
    }

    /// Robin Hood insertion of `slot` starting at `p` (from [`Slots::vacant`]), `dist` slots
    /// from its home.
    #[inline]
    pub(super) fn place_at(&mut self, p: Pos, dist: usize, slot: Slot) {
        let (si, i) = split_pos(p);
        self.segs[si].place_at(i, dist, slot);
    }

    /// Empties the slot at `p` by backward-shift deletion and returns what it held.
    pub(super) fn remove(&mut self, p: Pos) -> Slot {
        let (si, mut i) = split_pos(p);
        let seg = &mut self.segs[si];
        let removed = seg.slot(i);
        let mask = seg.mask();
        loop {
            let j = (i + 1) & mask;
            let s = seg.slot(j);
            if s.is_empty() || seg.dist(j, s.fp) == 0 {
                break;
            }
            seg.arr_mut()[i] = s;
            i = j;
        }
        seg.arr_mut()[i] = EMPTY_SLOT;
        seg.len -= 1;
        removed
    }

    /// The position of the slot holding `loc`, whose fingerprint is `fp` (it must exist).
    pub(super) fn find_loc(&self, fp: u32, loc: u64) -> Pos {
        let (si, seg) = self
            .seg_for(fp)
            .unwrap_or_else(|| unreachable!("state table: live entry without a slot"));
        let mask = seg.mask();
        let mut i = seg.home(fp);
        loop {
            let s = seg.slot(i);
            assert!(!s.is_empty(), "state table: live entry without a slot");
            if s.loc() == loc {
                return pos(si, i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Rebuilds the index for `entries` entries when at most 1/8 of its slots would do (after a
    /// `retain` removed most entries). O(slots).
    pub(super) fn shrink(&mut self, entries: usize) {
        let total = self.len();
        if total <= MIN_SLOTS || super::slots_for(entries) > total / 8 {
            return;
        }
        let mut fresh = Slots::for_entries(entries);
        fresh.rebuilds = self.rebuilds + 1;
        for s in self
            .segs
            .drain(..)
            .flat_map(|s| s.slots.into_iter().skip(s.base))
        {
            if !s.is_empty() {
                let (si, home) = fresh
                    .seg_for(s.fp)
                    .map_or((0, 0), |(si, seg)| (si, seg.home(s.fp)));
                fresh.segs[si].place_at(home, 0, s);
            }
        }
        *self = fresh;
    }

    /// Checks the directory and every segment (tests).
    #[cfg(test)]
    pub(super) fn check(&self, mut slot_ok: impl FnMut(&Slot)) -> usize {
        if self.segs.is_empty() {
            assert!(self.dir.is_empty() && self.depth == 0);
        } else {
            assert_eq!(self.dir.len(), 1 << self.depth);
        }
        let mut occupied = 0;
        for (si, seg) in self.segs.iter().enumerate() {
            assert!(seg.n().is_power_of_two() && seg.n() >= MIN_SLOTS);
            assert!(seg.n() <= SEG_MAX.max(MIN_SLOTS));
            assert!(seg.len * 8 <= seg.n() * 7, "segment load above 7/8");
            assert!(
                seg.slots[..seg.base].iter().all(Slot::is_empty),
                "padding in use"
            );
            assert!(seg.depth <= self.depth);
            let named = self.dir.iter().filter(|&&x| x as usize == si).count();
            assert_eq!(
                named,
                1 << (self.depth - seg.depth),
                "directory entries of a segment"
            );
            let mut n = 0;
            for (i, s) in seg.arr().iter().enumerate() {
                if s.is_empty() {
                    continue;
                }
                n += 1;
                assert_eq!(
                    self.seg_for(s.fp).map(|(x, _)| x),
                    Some(si),
                    "slot in the wrong segment"
                );
                let d = seg.dist(i, s.fp);
                if d > 0 {
                    let prev_i = (i + seg.n() - 1) & seg.mask();
                    let prev = seg.slot(prev_i);
                    assert!(!prev.is_empty(), "gap before a displaced slot");
                    assert!(
                        seg.dist(prev_i, prev.fp) + 1 >= d,
                        "Robin Hood order violated"
                    );
                }
                slot_ok(s);
            }
            assert_eq!(n, seg.len, "segment count");
            occupied += n;
        }
        occupied
    }

    /// The longest distance of any slot from its home (tests).
    #[cfg(test)]
    pub(super) fn max_probe(&self) -> usize {
        self.segs
            .iter()
            .flat_map(|seg| {
                seg.arr()
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.is_empty())
                    .map(move |(i, s)| seg.dist(i, s.fp))
            })
            .max()
            .unwrap_or(0)
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("state table: more than 2^32 segments"))
}

impl Index<Pos> for Slots {
    type Output = Slot;

    #[inline]
    fn index(&self, p: Pos) -> &Slot {
        let (si, i) = split_pos(p);
        let seg = &self.segs[si];
        &seg.slots[seg.base + i]
    }
}

impl IndexMut<Pos> for Slots {
    #[inline]
    fn index_mut(&mut self, p: Pos) -> &mut Slot {
        let (si, i) = split_pos(p);
        let seg = &mut self.segs[si];
        &mut seg.slots[seg.base + i]
    }
}
