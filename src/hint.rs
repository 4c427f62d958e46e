//! CPU hints: the crate's one piece of `unsafe` outside the mapped segments.
//!
//! A prefetch asks the CPU to start loading a cache line the caller will read soon, so the
//! memory latency overlaps other work (the state table issues one for a key's slot and entry
//! before the log append, and reads them after it). It is only a hint: it never faults, never
//! changes memory, and any address is allowed.

/// Starts loading the cache line holding `*p` into every cache level.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `prefetcht0` is a hint with no architectural effect: it does not dereference the
    // pointer in the language's sense, cannot fault (invalid addresses are ignored) and writes
    // nothing. SSE, which provides it, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Size of a transparent huge page on x86_64 and aarch64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `buf` with transparent huge pages
/// (`MADV_HUGEPAGE`), for a large array read at random (the state table's slots): one TLB entry
/// then covers 2 MiB instead of 4 KiB, so a lookup's cache miss is not also a page walk. Call it
/// before the memory is first written, so the first touch allocates huge pages directly.
///
/// A hint only: contents and validity of the memory do not change, errors (no THP support, a
/// policy of `never`) are ignored, and buffers smaller than two huge pages are left alone.
pub(crate) fn advise_huge_pages<T>(buf: &mut [std::mem::MaybeUninit<T>]) {
    let start = buf.as_mut_ptr() as usize;
    let len = std::mem::size_of_val(buf);
    if len < 2 * HUGE_PAGE {
        return;
    }
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let end = (start + len) & !(HUGE_PAGE - 1);
    if end <= aligned {
        return;
    }
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: `[aligned, end)` lies inside `buf`, memory this process owns through the exclusive
    // borrow, and is page-aligned as madvise requires. MADV_HUGEPAGE changes only how the kernel
    // backs the range (it may later merge its pages into huge pages); it never changes the
    // contents or invalidates the memory, so no Rust invariant depends on its outcome.
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_HUGEPAGE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (aligned, end);
}

/// [`prefetch`] of every cache line of `[p, p + len)`, up to [`PREFETCH_RANGE_LINES`] lines: a
/// value of 100 bytes at an arbitrary offset spans two or three lines, and a prefetch of its
/// first byte leaves the copy that reads it waiting for the rest.
#[inline]
pub(crate) fn prefetch_range(p: *const u8, len: usize) {
    let first = p as usize & !(CACHE_LINE - 1);
    let last = (p as usize).wrapping_add(len.max(1) - 1) & !(CACHE_LINE - 1);
    let mut line = first;
    for _ in 0..PREFETCH_RANGE_LINES {
        prefetch(line as *const u8);
        if line >= last {
            break;
        }
        line += CACHE_LINE;
    }
}

const CACHE_LINE: usize = 64;
/// Values longer than this many lines are read sequentially, which the hardware prefetches.
const PREFETCH_RANGE_LINES: usize = 4;

/// Makes room in `v` for `additional` more elements, as `Vec::reserve` does (at least doubling),
/// but in a new buffer advised for huge pages ([`advise_huge_pages`]) before the elements are
/// moved into it: `reserve` would grow the buffer in place or move its pages (`mremap`), and the
/// pages written before stay small. For large arrays that grow while they are read at random
/// (a compaction's delta): with small pages, every access of 1 M keys' values was also a page
/// walk, and a compaction took about a quarter longer (`probes/cprobe` medians, 1.10 s against
/// 0.86 s).
pub(crate) fn reserve_huge<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() >= additional {
        return;
    }
    let want = v.len().checked_add(additional).expect("capacity overflow");
    let mut fresh = Vec::with_capacity(want.max(v.capacity() * 2).max(4));
    advise_huge_pages(fresh.spare_capacity_mut());
    fresh.append(v);
    *v = fresh;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Growth keeps every element, in order, and leaves room as asked.
    #[test]
    fn reserve_huge_keeps_the_elements() {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..3_000_000u64 {
            reserve_huge(&mut v, 1);
            assert!(v.capacity() > v.len());
            v.push(i);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        let before = v.capacity();
        reserve_huge(&mut v, before);
        assert!(v.capacity() - v.len() >= before);
        assert_eq!(v.len(), 3_000_000);
        assert_eq!(v[2_999_999], 2_999_999);
    }
}
