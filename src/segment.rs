//! One segment file: preallocated, memory-mapped, appended to by many threads at once.
//!
//! All `unsafe` code of the crate lives in this module: the mapping, the raw writes into it, the
//! atomic publication of frames, zero-copy views of published bytes, the `fallocate`,
//! `sync_file_range` and `statfs` calls; and, at the end, [`ImmutableFileMap`], the read-only
//! mapping a snapshot load reads in place.
//!
//! # Invariants (what makes the raw memory access sound)
//!
//! The mapping is shared, writable memory. We never create a `&mut [u8]` over it. Its bytes are in
//! one of three zones, in file order:
//!
//! 1. `[0, published)`: **immutable**. Every frame here has a non-zero `len` stored with `Release`
//!    and observed with `Acquire` by the prefix walk that advanced `published`. Nothing writes these
//!    bytes again while the segment is mapped, so shared `&[u8]` views of them are sound.
//! 2. `[published, reserved)`: frames handed out by [`Segment::try_append`], each to exactly one
//!    writer, which writes every byte of its frame except `len` with plain stores and then
//!    publishes `len` with an atomic `Release` store. Other threads touch this zone only through
//!    atomic loads of `len` fields at frame starts.
//! 3. `[reserved, len)`: zero, untouched until reserved.
//!
//! Reservations are carved from a single atomic word, so they never overlap. Recovery rewrites
//! bytes (zeroing a torn tail) only through `&mut self`, when no view can exist.
//!
//! The file is `fallocate`d to its full size before it is mapped: a store into a hole would need
//! block allocation at page-fault time, and on a full disk that is a SIGBUS, not an error.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};

use crate::codec::frame::{
    frame_crc, frame_size, FrameKind, CRC_OFFSET, FRAME_ALIGN, FRAME_HEADER_LEN, KIND_OFFSET,
    LEN_OFFSET, LSN_OFFSET,
};
use crate::codec::header::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::format;

/// Largest segment file we create or accept: offsets must fit the 32-bit reservation field.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// Smallest segment size accepted in options.
pub const MIN_SEGMENT_SIZE: u64 = 4096;

const OFFSET_MASK: u64 = (1 << 32) - 1;
const COUNT_SHIFT: u32 = 32;
const COUNT_MASK: u64 = (1 << 31) - 1;
const SEALED: u64 = 1 << 63;
/// How far past the end of an appended frame the next frames' lines are prefetched.
const WRITE_AHEAD: usize = 512;
/// The page size the mapping's page-granular calls round to (4 KiB on x86_64 and most aarch64).
const PAGE: usize = 4096;

/// Where [`Segment::try_append`] put a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The frame's LSN field.
    pub lsn: u64,
    /// Offset of the frame.
    pub start: usize,
    /// Offset just past the frame (and its padding).
    pub end: usize,
}

/// The result of walking the published frames of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPrefix {
    /// End of the contiguous run of published frames.
    pub end: usize,
    /// LSN and stored CRC of the last data record in it, if any.
    pub last_data: Option<(u64, u32)>,
}

#[derive(Debug)]
struct ScanPos {
    pos: usize,
    last_data: Option<(u64, u32)>,
}

/// A mapped segment file.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    header: SegmentHeader,
    map: MmapRaw,
    /// The file stays open for the lifetime of the mapping (and for `fallocate`/`fsync`).
    file: File,
    /// Usable length: the file length rounded down to the frame alignment.
    len: usize,
    /// `count << 32 | offset`, plus [`SEALED`]: see the module invariants.
    reserve: AtomicU64,
    /// End of the immutable zone.
    published: AtomicUsize,
    /// Cached position of the published-prefix walk.
    scan: Mutex<ScanPos>,
    /// Bytes known flushed to stable storage.
    synced: AtomicUsize,
    /// The directory entry is durable (the directory was synced after the rename).
    creation_synced: AtomicBool,
    /// Created by this process (not opened by recovery): its mapping carries the advice the
    /// log's mode wants, and its page cache holds only what appends put there. Only such a
    /// segment is reused (a recovered one may sit in large page-cache folios from recovery's
    /// reads, which every small flush after its reuse would write back whole).
    created_here: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is plain offsets, updated in one step: still valid if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Syncs a directory so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Allocates `len` bytes of real blocks for `file` (never sparse).
pub(crate) fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let no_space = |source: io::Error| Error::NoSpace {
        path: path.to_path_buf(),
        len,
        source,
    };
    let is_no_space = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
        )
    };
    #[cfg(target_os = "linux")]
    {
        let off_len = libc::off_t::try_from(len).map_err(|_| Error::InvalidOptions {
            name: "segment_size",
            reason: format!("{len} bytes does not fit off_t"),
        })?;
        loop {
            // SAFETY: `fallocate` takes a file descriptor we own (kept open by `file` for the
            // duration of the call) and plain integers; it does not touch our memory.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, off_len) };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP) => break, // e.g. some network file systems: write zeros
                _ if is_no_space(&e) => return Err(no_space(e)),
                _ => return Err(Error::io("fallocate", path, e)),
            }
        }
    }
    // Portable fallback: write real zeros so no block is a hole.
    let chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], at).map_err(|e| {
            if is_no_space(&e) {
                no_space(e)
            } else {
                Error::io("write zeros", path, e)
            }
        })?;
        at += n as u64;
    }
    Ok(())
}

impl Segment {
    /// Creates segment `header.segment_id` in `dir` with `size` bytes, durably: built under a
    /// temporary name, preallocated, header written and synced, renamed, directory synced.
    pub fn create(dir: &Path, header: &SegmentHeader, size: u64) -> Result<Segment> {
        PreparedSegment::prepare(dir, header.segment_id, size, false, false)?
            .finalize(dir, header, true)
    }

    /// Opens an existing segment for recovery. The whole file is readable (everything counts as
    /// published) and the segment is sealed until [`Segment::activate`] opens it for appends.
    ///
    /// `expected_id` is the id from the file name. The header is validated except for its place in
    /// the log (log id, LSN chain), which the caller checks.
    pub fn open(path: &Path, expected_id: u64, writable: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if file_len < SEGMENT_HEADER_LEN as u64 {
            return Err(Error::corrupt(
                path,
                0,
                CorruptionKind::Truncated {
                    len: file_len,
                    needed: SEGMENT_HEADER_LEN as u64,
                },
            ));
        }
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("read header", path, e))?;
        let header = SegmentHeader::decode(&head).map_err(|e| match e {
            crate::codec::header::HeaderError::UnsupportedVersion { found } => {
                Error::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found,
                    supported: crate::codec::header::SEGMENT_VERSION_MAX,
                }
            }
            other => Error::corrupt(path, 0, CorruptionKind::BadSegmentHeader(other)),
        })?;
        if header.segment_id != expected_id {
            return Err(Error::corrupt(
                path,
                0,
                CorruptionKind::SegmentIdMismatch {
                    expected: expected_id,
                    found: header.segment_id,
                },
            ));
        }
        if file_len > MAX_SEGMENT_SIZE {
            return Err(Error::InvalidOptions {
                name: "segment file size",
                reason: format!(
                    "{} is {file_len} bytes, above the {MAX_SEGMENT_SIZE} maximum",
                    path.display()
                ),
            });
        }
        let len = (file_len as usize) & !(FRAME_ALIGN - 1);
        let seg = if writable {
            Self::map(path.to_path_buf(), file, header, len)?
        } else {
            Self::map_read_only(path.to_path_buf(), file, header, len)?
        };
        seg.published.store(len, Ordering::Release);
        seg.reserve.store(SEALED | len as u64, Ordering::Release);
        seg.synced.store(len, Ordering::Release);
        *lock(&seg.scan) = ScanPos {
            pos: len,
            last_data: None,
        };
        Ok(seg)
    }

    fn map(path: PathBuf, file: File, header: SegmentHeader, len: usize) -> Result<Segment> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Self::from_parts(path, file, map, header, len))
    }

    fn map_read_only(
        path: PathBuf,
        file: File,
        header: SegmentHeader,
        len: usize,
    ) -> Result<Segment> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw_read_only(&file)
            .map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Self::from_parts(path, file, map, header, len))
    }

    fn from_parts(
        path: PathBuf,
        file: File,
        map: MmapRaw,
        header: SegmentHeader,
        len: usize,
    ) -> Segment {
        Segment {
            path,
            header,
            map,
            file,
            len,
            reserve: AtomicU64::new(SEALED),
            published: AtomicUsize::new(0),
            scan: Mutex::new(ScanPos {
                pos: 0,
                last_data: None,
            }),
            synced: AtomicUsize::new(0),
            creation_synced: AtomicBool::new(true),
            created_here: false,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoded header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Segment id.
    pub fn id(&self) -> u64 {
        self.header.segment_id
    }

    /// Usable length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The largest payload a frame in a segment of this size can carry.
    pub fn max_payload(segment_len: usize) -> usize {
        segment_len.saturating_sub(SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) & !(FRAME_ALIGN - 1)
    }

    /// The immutable bytes in `range`, or `None` if any of them is not yet published.
    pub fn bytes(&self, start: usize, end: usize) -> Option<&[u8]> {
        if start > end || end > self.published.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: `[start, end)` lies below `published` (checked above, with Acquire pairing with
        // the Release that advanced it), i.e. in the immutable zone of the module invariants:
        // nothing writes it while `self` is mapped, and the mapping outlives the borrow of `self`.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), end - start) })
    }

    /// A zero-copy [`Bytes`] of the immutable bytes in `range`, keeping the mapping alive.
    pub fn slice(self: &Arc<Self>, start: usize, end: usize) -> Option<Bytes> {
        self.bytes(start, end)?;
        Some(Bytes::from_owner(MappedSlice {
            seg: Arc::clone(self),
            start,
            end,
        }))
    }

    /// Reserves room for a frame and writes it; returns the frame's LSN field and the offset where
    /// the frame ends, or `None` if the segment is sealed or full (the caller rolls to a new
    /// segment). The frame is published (visible to readers and flushes) when this returns.
    pub fn try_append(&self, kind: FrameKind, payload: &[u8]) -> Option<Appended> {
        let size = frame_size(payload.len())?;
        let data = u64::from(kind == FrameKind::Data);
        let mut cur = self.reserve.load(Ordering::Relaxed);
        let (off, count) = loop {
            if cur & SEALED != 0 {
                return None;
            }
            let off = (cur & OFFSET_MASK) as usize;
            let count = (cur >> COUNT_SHIFT) & COUNT_MASK;
            if off + size > self.len {
                return None;
            }
            let new = ((count + data) << COUNT_SHIFT) | (off + size) as u64;
            match self
                .reserve
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break (off, count),
                Err(now) => cur = now,
            }
        };
        // A marker carries the LSN of the data record before it.
        let lsn = self.header.base_lsn + count - (1 - data);
        let len = (FRAME_HEADER_LEN + payload.len()) as u32;
        let crc = frame_crc(len, lsn, kind, payload);
        let mut head = [0u8; FRAME_HEADER_LEN - LSN_OFFSET];
        head[..8].copy_from_slice(&lsn.to_le_bytes());
        head[KIND_OFFSET - LSN_OFFSET] = kind as u8;
        let base = self.map.as_mut_ptr();
        // SAFETY: `[off, off + size)` was reserved by the successful compare-exchange above, so no
        // other thread writes it, and it lies within the mapping (`off + size <= self.len`). No
        // `&`/`&mut` view of it exists (it is above `published`). We write every byte but the `len`
        // field with plain stores; padding bytes are already zero (zone 3 of the invariants).
        // `off` is a multiple of FRAME_ALIGN and the mapping is page-aligned, so the `len` field is
        // 4-byte aligned for the atomic store, which publishes the frame with Release ordering.
        unsafe {
            let frame = base.add(off);
            std::ptr::copy_nonoverlapping(crc.to_le_bytes().as_ptr(), frame.add(CRC_OFFSET), 4);
            std::ptr::copy_nonoverlapping(head.as_ptr(), frame.add(LSN_OFFSET), head.len());
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                frame.add(FRAME_HEADER_LEN),
                payload.len(),
            );
            AtomicU32::from_ptr(frame.add(LEN_OFFSET).cast::<u32>())
                .store(len.to_le(), Ordering::Release);
        }
        // The next frames go right after this one. The lines this frame's span covers,
        // WRITE_AHEAD bytes further on, start loading now, so the next appends' stores find
        // them in the cache instead of each waiting for its line. (Without it the stores of an
        // append filled the store buffer and stalled the thread's next work: 10 M 150-byte
        // state updates ran 0-38% faster with it in seven A/B pairs, median 22%.) A read prefetch: a write-intent one (`prefetchw`)
        // is not in the x86_64 baseline, and the compiler lowers it to this same `prefetcht0`.
        // A hint only; a large frame issues at most 8, as the hardware's own streaming covers
        // long copies.
        let end = (off + size + WRITE_AHEAD).min(self.len);
        let mut line = (off + WRITE_AHEAD).next_multiple_of(64);
        for _ in 0..8 {
            if line >= end {
                break;
            }
            crate::hint::prefetch(base.wrapping_add(line));
            line += 64;
        }
        Some(Appended {
            lsn,
            start: off,
            end: off + size,
        })
    }

    /// Advises the mapping for small exact flushes (`MADV_RANDOM`; see `random_access`).
    pub fn advise_small_flushes(&self) -> io::Result<()> {
        random_access(&self.map)
    }

    /// Whether the segment's directory entry is known durable.
    pub fn creation_synced(&self) -> bool {
        self.creation_synced.load(Ordering::Acquire)
    }

    /// Bytes of the file known flushed to stable storage, from its start: 0 until the header of
    /// a segment created without waiting for the disk is durable.
    pub fn synced_len(&self) -> usize {
        self.synced.load(Ordering::Acquire)
    }

    /// Records that the directory was synced after this segment was renamed into place.
    pub fn mark_creation_synced(&self) {
        self.creation_synced.store(true, Ordering::Release);
    }

    /// Whether every reserved byte is flushed (false while the segment is still appendable).
    pub fn fully_synced(&self) -> bool {
        let r = self.reserve.load(Ordering::Acquire);
        r & SEALED != 0 && self.synced.load(Ordering::Acquire) >= (r & OFFSET_MASK) as usize
    }

    /// End of the reserved region: where the next frame will go.
    pub fn reserved_end(&self) -> usize {
        (self.reserve.load(Ordering::Acquire) & OFFSET_MASK) as usize
    }

    /// LSN of the last data record reserved in this segment (the one before `base_lsn` if none).
    pub fn last_reserved_lsn(&self) -> u64 {
        let count = (self.reserve.load(Ordering::Acquire) >> COUNT_SHIFT) & COUNT_MASK;
        self.header.base_lsn.saturating_add(count).saturating_sub(1)
    }

    /// Walks the frames published since the last walk and returns the end of the contiguous
    /// published run (frames reserved before an unfinished one are not counted).
    pub fn published_prefix(&self) -> PublishedPrefix {
        let mut scan = lock(&self.scan);
        let reserved = (self.reserve.load(Ordering::Acquire) & OFFSET_MASK) as usize;
        let base = self.map.as_ptr();
        while scan.pos < reserved {
            let at = scan.pos;
            // SAFETY: `at` is a frame start below `reserved` (the walk starts at a frame start and
            // steps by whole frames), so the aligned `len` word lies in the mapping. Writers store it
            // only atomically, so an atomic load races with nothing.
            let len = unsafe {
                AtomicU32::from_ptr(base.add(at + LEN_OFFSET).cast::<u32>().cast_mut())
                    .load(Ordering::Acquire)
            };
            let len = u32::from_le(len) as usize;
            if len == 0 {
                break; // reserved, still being written
            }
            // SAFETY: the Acquire load above saw the writer's Release store of `len`, so the frame's
            // other bytes are written and will not change; reading the header fields is race-free.
            let (crc, lsn, kind) = unsafe {
                let f = base.add(at);
                let mut crc = [0u8; 4];
                let mut lsn = [0u8; 8];
                std::ptr::copy_nonoverlapping(f.add(CRC_OFFSET), crc.as_mut_ptr(), 4);
                std::ptr::copy_nonoverlapping(f.add(LSN_OFFSET), lsn.as_mut_ptr(), 8);
                (
                    u32::from_le_bytes(crc),
                    u64::from_le_bytes(lsn),
                    *f.add(KIND_OFFSET),
                )
            };
            if kind == FrameKind::Data as u8 {
                scan.last_data = Some((lsn, crc));
            }
            scan.pos = at + ((len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1));
        }
        self.published.fetch_max(scan.pos, Ordering::AcqRel);
        PublishedPrefix {
            end: scan.pos,
            last_data: scan.last_data,
        }
    }

    /// Stops further reservations and returns where the reserved region ends.
    pub fn seal(&self) -> usize {
        (self.reserve.fetch_or(SEALED, Ordering::AcqRel) & OFFSET_MASK) as usize
    }

    /// Whether [`Segment::seal`] was called (or the segment was opened read-only for recovery).
    pub fn is_sealed(&self) -> bool {
        self.reserve.load(Ordering::Acquire) & SEALED != 0
    }

    /// Walks until every frame reserved before `end` is published. Writers between reserving and
    /// publishing only copy bytes, so this waits for at most a few memcpys.
    pub fn wait_published(&self, end: usize) -> PublishedPrefix {
        let mut spins = 0u32;
        loop {
            let p = self.published_prefix();
            if p.end >= end {
                return p;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Flushes `[synced, end)` to stable storage (msync of exactly the dirty pages).
    pub fn flush_to(&self, end: usize) -> io::Result<()> {
        let from = self.synced.load(Ordering::Acquire);
        if end <= from {
            return Ok(());
        }
        // The pages to flush are unmapped first, in one batched TLB flush: writeback
        // write-protects every mapped page it cleans, with a TLB-shootdown IPI per page once the
        // process runs threads on more than one core (a W3 run of 8 committers: 12% of its
        // samples sending them, 11% in the hypervisor's IPI exits). Every byte below `end` is
        // published, so no thread stores to the whole pages below it; the page holding `end`,
        // where appenders may be writing, is unmapped too only where the kernel makes that safe
        // (see `release_pages`).
        let to = if unmap_under_writers_is_safe() {
            end.next_multiple_of(PAGE).min(self.len)
        } else {
            end & !(PAGE - 1)
        };
        self.unmap_pages(from & !(PAGE - 1), to);
        // In a recycled segment the disk holds an older segment's bytes wherever the zeros the
        // file was reused with have not been written back: the zero length that ends the
        // written part in memory must reach the disk with the records before it, or recovery
        // would find the older bytes there (a stale frame ends the written part as a zero
        // length does, but older bytes in the middle of a stale frame would read as a torn
        // record). So the flush covers the `len` field after `end` too (the next page when
        // `end` is page-aligned). `synced` stays at `end`: the bytes after it are not final.
        let flush_end = if self.header.recycled {
            (end + LEN_OFFSET + 4).min(self.len)
        } else {
            end
        };
        self.map.flush_range(from, flush_end - from)?;
        self.synced.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// The byte ranges at or after `from` that may hold data, by `SEEK_DATA`/`SEEK_HOLE`: every byte
    /// outside them reads as zero. Lets recovery skip the never-written (unwritten-extent) part of a
    /// preallocated segment instead of faulting it all in. `None` if the file system cannot tell.
    pub fn data_regions(&self, from: usize) -> Option<Vec<(usize, usize)>> {
        let fd = self.file.as_raw_fd();
        let mut regions = Vec::new();
        let mut at = from;
        while at < self.len {
            let off = libc::off_t::try_from(at).ok()?;
            // SAFETY: `lseek` on a descriptor we own (kept open by `self.file`); it only moves
            // this descriptor's offset, which nothing else in the crate uses (all I/O is mapped or
            // positional).
            let start = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
            if start < 0 {
                let e = io::Error::last_os_error();
                return (e.raw_os_error() == Some(libc::ENXIO)).then_some(regions);
                // no data past `at`
            }
            // SAFETY: as above.
            let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
            if end < 0 {
                return None;
            }
            let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
            if end <= start {
                return None;
            }
            regions.push((start.min(self.len), end.min(self.len)));
            at = end;
        }
        Some(regions)
    }

    /// Faults in the pages of `[from, to)` for writing ahead of the appenders (best effort).
    pub fn prefault(&self, from: usize, to: usize) {
        prefault(&self.map, self.len, from, to);
    }

    /// Drops this process's page-table entries for the pages inside `[from, to)` (`MADV_DONTNEED`
    /// on a shared file mapping). The data stays in the page cache, dirty pages stay dirty, and
    /// the next access faults the page back in. Done before writeback: writeback write-protects
    /// every mapped page it cleans, one TLB-shootdown IPI per 4 KiB page, which interrupts the
    /// appending threads; unmapped pages need none.
    ///
    /// **Only for pages no thread writes any more** (published bytes, `[0, published)`): before
    /// Linux 6.2 (commit 5df397dec7c4) an unmap dropped the page's reverse mapping before the TLB
    /// flush, so a writeback in that window could mark the page clean while another CPU still
    /// stored through its stale TLB entry, and those stores were never written back.
    pub fn release_pages(&self, from: usize, to: usize) {
        self.unmap_pages(from.next_multiple_of(PAGE), to.min(self.len) & !(PAGE - 1));
    }

    /// [`Segment::release_pages`] of pages other threads may still be storing into (the
    /// `Sync` window ahead of the appenders), only where the kernel makes that safe
    /// ([`unmap_under_writers_is_safe`]); elsewhere nothing.
    pub fn release_pages_in_use(&self, from: usize, to: usize) {
        if unmap_under_writers_is_safe() {
            self.release_pages(from, to);
        }
    }

    /// `MADV_DONTNEED` on `[from, to)`, page-aligned by the caller.
    fn unmap_pages(&self, from: usize, to: usize) {
        if to > from {
            // SAFETY: MADV_DONTNEED is "unchecked" in memmap2 because on a *private* mapping it
            // discards modifications. This mapping is MAP_SHARED over a file: dropping the page
            // table entries discards nothing (the page cache keeps the data, dirty or not), and any
            // later access, including through a live `&[u8]` view, faults the page-cache page back
            // in. Callers unmap only published pages, which no thread stores to any more (see
            // `release_pages` for why that matters). One case changes the bytes a view sees, and it
            // is not this call's: after a failed writeback the kernel may drop the clean page, and
            // a later fault reads what the disk holds; that failure has poisoned the log.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, from, to - from)
            };
        }
    }

    /// Drops the page cache of the clean, unwritten part of a recovered tail, `[from, len)`:
    /// recovery's reads there (looking for bytes past the end of the data) leave large page-cache
    /// folios behind, and since a flush writes back whole folios, every checkpoint or sync of the
    /// reopened log would then write up to megabytes for a few appended records. Appends fault
    /// fresh pages in instead, as in a fresh segment. Call only when `[from, len)` is clean
    /// (recovery has synced the file). Best effort: a failure only costs flush size.
    pub fn drop_clean_cache(&self, from: usize) {
        let from = from.next_multiple_of(PAGE);
        if from >= self.len {
            return;
        }
        self.release_pages(from, self.len);
        #[cfg(target_os = "linux")]
        {
            let (Ok(off), Ok(len)) = (
                libc::off_t::try_from(from),
                libc::off_t::try_from(self.len - from),
            ) else {
                return;
            };
            // SAFETY: `posix_fadvise` takes a file descriptor we own (kept open by `self.file`
            // for the duration of the call) and plain integers; it does not touch our memory.
            // POSIX_FADV_DONTNEED drops clean, unmapped page-cache pages only (the range was just
            // unmapped above), so no data can be lost: a later access reads it back from disk.
            let _ = unsafe {
                libc::posix_fadvise(self.file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED)
            };
        }
    }

    /// Starts writing back the dirty pages of `[from, to)` without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): behind the appenders it keeps the flush at the
    /// next roll short; ahead of them (`Sync` mode) it converts unwritten extents before commits
    /// reach them. It promises nothing about durability; only [`Segment::flush_to`] does. An
    /// error the call returns (the file system refused to start the I/O) is returned; one the I/O
    /// meets later stays recorded on the file for the next flush to report. `Ok` where the call
    /// does not exist or the file does not support it.
    pub fn start_writeback(&self, from: usize, to: usize) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if to > from {
            let (Ok(off), Ok(n)) = (
                libc::off64_t::try_from(from),
                libc::off64_t::try_from(to - from),
            ) else {
                return Ok(());
            };
            // SAFETY: `sync_file_range` takes a descriptor we own (kept open by `self.file`) and
            // integers; it touches no memory of ours.
            let rc = unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE)
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE) => Ok(()),
                    _ => Err(e),
                };
            }
        }
        Ok(())
    }

    /// For a recycled segment nothing will append to again (the log is closing): drops the
    /// zeros its reuse wrote into the page cache past the page after its records, without
    /// writing them (`FALLOC_FL_ZERO_RANGE`: the range becomes unwritten extents, which read as
    /// zeros). Otherwise the kernel, or the next open's sync of the tail, would write up to a
    /// segment of zeros the log never needed (a W5 reopen: 94 → 314 ms). Needs no view, append
    /// or flush to be in progress past the records (the caller is the log's drop, after its
    /// background thread stopped; appenders borrow the log). On disk the range holds older
    /// bytes or zeros either way, so a crash around it leaves a state recovery already reads.
    /// Best effort: file systems without the call keep the zeros.
    pub fn release_unused_recycled(&self) {
        #[cfg(target_os = "linux")]
        if self.header.recycled {
            let from = (self.reserved_end() + LEN_OFFSET + 4).next_multiple_of(PAGE);
            if from >= self.len {
                return;
            }
            let (Ok(off), Ok(n)) = (
                libc::off_t::try_from(from),
                libc::off_t::try_from(self.len - from),
            ) else {
                return;
            };
            // SAFETY: `fallocate` takes a descriptor we own (kept open by `self.file`) and
            // integers. The kernel drops the range's page-cache pages and this process's page
            // table entries for them; no Rust view covers the range (it lies past every
            // published byte, and nothing is reserved there: no appender can exist).
            let _ = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    n,
                )
            };
        }
    }

    /// `fdatasync` of the whole file: makes durable whatever the page cache holds for it.
    pub fn sync_file(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Zeroes `[from, to)` and flushes it (recovery only: `&mut self` proves no view is alive).
    fn zero_durably(&mut self, from: usize, to: usize) -> io::Result<()> {
        if to > from {
            // In two halves, with a crash point between them: a crash test sees a cut half zeroed
            // (the shared mapping's stores are in the page cache, flushed or not).
            let mid = from + (to - from) / 2;
            for (start, end) in [(from, mid), (mid, to)] {
                if start > from {
                    crate::crash_point::crash_point("zeroing the second half of a cut");
                }
                // SAFETY: `&mut self` proves no view of the mapping is alive and no other thread
                // can append (the segment is sealed and unshared); callers clamp the range to the
                // mapping, and `from <= start <= end <= to`.
                unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(start), 0, end - start) };
            }
            self.map.flush_range(from, to - from)?;
        }
        Ok(())
    }

    /// Recovery's step for a segment that will not be appended to: everything from `end` on is
    /// unreadable from now on, and the bytes in `[end, dirty_end)` (debris after the segment's
    /// last record) are zeroed and flushed. Needs a writable mapping when there is debris.
    pub fn seal_at(&mut self, end: usize, dirty_end: usize) -> io::Result<()> {
        let end = end.min(self.len);
        let dirty_end = dirty_end.min(self.len);
        self.zero_durably(end, dirty_end)?;
        *self.published.get_mut() = end;
        *self.synced.get_mut() = end;
        *self.reserve.get_mut() = SEALED | end as u64;
        *self.scan.get_mut().unwrap_or_else(PoisonError::into_inner) = ScanPos {
            pos: end,
            last_data: None,
        };
        Ok(())
    }

    /// Recovery's last step on the tail segment: zero every byte from `end` to `dirty_end` (a torn
    /// tail), flush that, and open the segment for appends at `end`.
    ///
    /// `data_count` is the number of data records in `[header, end)` and `last_data` the LSN and
    /// CRC of the last one.
    pub fn activate(
        &mut self,
        end: usize,
        dirty_end: usize,
        data_count: u64,
        last_data: Option<(u64, u32)>,
    ) -> io::Result<()> {
        let end = end.min(self.len);
        let dirty_end = dirty_end.min(self.len);
        self.zero_durably(end, dirty_end)?;
        *self.published.get_mut() = end;
        *self.synced.get_mut() = end;
        // A recycled segment is not appended to after a reopen: past its records the file may
        // hold an older segment's bytes (in the page cache too, in large folios from recovery's
        // reads), and appends need zeros there (zone 3). Zeroing and flushing the rest of the
        // file would cost a reopen up to a segment's worth of writes; sealing it costs the
        // first append a roll to a new segment instead.
        let sealed = if self.header.recycled { SEALED } else { 0 };
        *self.reserve.get_mut() = sealed | ((data_count & COUNT_MASK) << COUNT_SHIFT) | end as u64;
        *self.scan.get_mut().unwrap_or_else(PoisonError::into_inner) = ScanPos {
            pos: end,
            last_data,
        };
        Ok(())
    }
}

/// A segment file allocated and mapped ahead of need, under a temporary name, with no header yet.
/// The log's background thread prepares the next segment so that a roll only writes the header,
/// syncs and renames. Recovery deletes a prepared file that was never finalized.
#[derive(Debug)]
pub struct PreparedSegment {
    tmp: PathBuf,
    id: u64,
    file: File,
    map: MmapRaw,
    len: usize,
    /// A reused file ([`PreparedSegment::recycle`]): its header will say so.
    recycled: bool,
}

/// A segment file taken out of the log for reuse ([`Segment::into_pooled`]): no longer part of
/// the log, its header durably zeroed, under a temporary name (so a crash leaves it for the next
/// open to delete), its mapping kept.
#[derive(Debug)]
pub struct PooledSegment {
    /// The id the file had in the log.
    id: u64,
    tmp: PathBuf,
    file: File,
    map: MmapRaw,
    len: usize,
}

impl PooledSegment {
    /// The id the file had in the log.
    pub fn old_id(&self) -> u64 {
        self.id
    }

    /// The file's size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Deletes the file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Segment {
    /// Takes a segment that left the log (its id is below `first_segment` in the meta file, and
    /// no reader holds it: the caller owns it alone) out for reuse: zeroes its header and syncs
    /// that, then renames the file to `tmp`. The header goes first so that a crash can never
    /// leave the old, valid header of a file that becomes a newer segment: a roll that does not
    /// wait for the disk relies on recovery reading an unwritten header there (see
    /// [`PreparedSegment::finalize`]). Refused (the segment is given back for deletion) when
    /// the file has another link (a hard link would see it overwritten), its size is not
    /// `size`, or recovery opened it (see `created_here`).
    pub fn into_pooled(
        self,
        tmp: PathBuf,
        size: u64,
    ) -> std::result::Result<PooledSegment, Box<(Segment, Error)>> {
        let md = match self.file.metadata() {
            Ok(md) => md,
            Err(e) => {
                let err = Error::io("stat", &self.path, e);
                return Err(Box::new((self, err)));
            }
        };
        if !self.created_here
            || std::os::unix::fs::MetadataExt::nlink(&md) != 1
            || md.len() != size
            || self.map.len() as u64 != size
        {
            let err = Error::io(
                "recycle",
                &self.path,
                io::Error::other(
                    "the file has other links or another size, or was opened by recovery",
                ),
            );
            return Err(Box::new((self, err)));
        }
        // Only the header page is synced: an fsync would also write every page of the old
        // segment still dirty, about to be zeroed anyway. Its blocks keep their allocation (no
        // metadata to sync).
        let zero = [0u8; SEGMENT_HEADER_LEN];
        let step = self
            .file
            .write_all_at(&zero, 0)
            .and_then(|()| self.map.flush_range(0, SEGMENT_HEADER_LEN))
            .map_err(|e| Error::io("zero header", &self.path, e))
            .and_then(|()| {
                std::fs::rename(&self.path, &tmp).map_err(|e| Error::io("rename", &self.path, e))
            });
        if let Err(e) = step {
            return Err(Box::new((self, e)));
        }
        Ok(PooledSegment {
            id: self.header.segment_id,
            tmp,
            len: self.map.len(),
            file: self.file,
            map: self.map,
        })
    }
}

impl PreparedSegment {
    /// Allocates (`fallocate`) and maps the file for segment `id` under a temporary name:
    /// `ahead` selects the background thread's name, distinct from the one a synchronous roll uses.
    /// `small_flushes` advises the mapping for small exact flushes (see [`Segment::advise_small_flushes`]).
    pub fn prepare(
        dir: &Path,
        id: u64,
        size: u64,
        ahead: bool,
        small_flushes: bool,
    ) -> Result<PreparedSegment> {
        let tmp = if ahead {
            format::prepared_segment_path(dir, id)
        } else {
            format::tmp_path(dir, &format::segment_file_name(id))
        };
        // The background thread's file is created exclusively: while a roll finalizes a file it
        // took from the background thread, the path still names that file until the rename, and
        // truncating it then would erase the header just written (a bug `tests/model.rs` found).
        // A roll's own temporary is only ever created under the log's meta lock.
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if ahead {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        let file = options
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let mapped = preallocate(&file, &tmp, size).and_then(|()| {
            let map = MmapOptions::new()
                .len(size as usize)
                .map_raw(&file)
                .map_err(|e| Error::io("mmap", &tmp, e))?;
            if small_flushes {
                random_access(&map).map_err(|e| Error::io("madvise", &tmp, e))?;
            }
            Ok(map)
        });
        match mapped {
            Ok(map) => Ok(PreparedSegment {
                tmp,
                id,
                file,
                map,
                len: size as usize,
                recycled: false,
            }),
            Err(e) => {
                // Best effort: a leftover temporary is also removed by the next recovery.
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Prepares a pooled file for segment `id`: zeroes it whole through its mapping, so that
    /// in memory it is a fresh segment (every append relies on the zeros after the reserved
    /// region). On disk the zeros arrive as the kernel writes them back: until then the older
    /// segment's bytes are there, which recovery tells apart by their LSNs (see
    /// [`SegmentHeader::recycled`]). The pages are usually in the page cache still and their
    /// blocks written (all but what the older segment never reached), so appends into them
    /// neither wait for fresh pages nor convert extents: what makes recycling faster than a
    /// fresh file.
    pub fn recycle(pooled: PooledSegment, id: u64) -> PreparedSegment {
        // The pages' faults in one call first (the kernel walks them without an exception per
        // page), then the stores.
        prefault(&pooled.map, pooled.len, 0, pooled.len);
        // SAFETY: the pooled segment is owned here alone: it left the log's segment list, the
        // `Arc` that held it was the last one (so no reader, view or appender of it exists),
        // and its mapping is `len` bytes long.
        unsafe { std::ptr::write_bytes(pooled.map.as_mut_ptr(), 0, pooled.len) };
        PreparedSegment {
            tmp: pooled.tmp,
            id,
            file: pooled.file,
            map: pooled.map,
            len: pooled.len,
            recycled: true,
        }
    }

    /// Whether the file is a reused one ([`PreparedSegment::recycle`]). Such a file can become
    /// any segment: its temporary name is its own, not derived from the id it was prepared for.
    pub fn is_recycled(&self) -> bool {
        self.recycled
    }

    /// Gives a reused file that was not needed back to the pool (zeroed already; it is zeroed
    /// again when next prepared). `None` (and the file deleted) for a fresh one.
    pub fn into_pooled(self) -> Option<PooledSegment> {
        if !self.recycled {
            self.discard();
            return None;
        }
        Some(PooledSegment {
            id: self.id,
            tmp: self.tmp,
            file: self.file,
            map: self.map,
            len: self.len,
        })
    }

    /// The segment id this file is prepared for.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes the header and renames the file to its final name: from then on the segment is part
    /// of the log.
    ///
    /// With `durable`, the file is synced before the rename and the directory after it, so the
    /// segment exists durably, header and all, when this returns (a `Sync` roll, and creation).
    ///
    /// Without it, nothing waits for the disk: the first flush of the segment covers its header
    /// too ([`Segment::synced_len`] starts at 0, so [`Segment::flush_to`] starts at byte 0), and
    /// [`Segment::creation_synced`] is false until the caller makes the header and the directory
    /// entry durable and calls [`Segment::mark_creation_synced`]. A crash before then can leave
    /// the final name with a header that never reached the disk (zeros, or a short file); no
    /// record in such a segment was acknowledged, and recovery sets it aside (see
    /// `docs/DESIGN.md`, "Rolling"). This is the appender's roll in `Buffered` and `Periodic`
    /// mode: an fsync there queues behind all of the file system's pending writeback (a running
    /// compaction's snapshot, say) and stalled appends for up to a second.
    pub fn finalize(self, dir: &Path, header: &SegmentHeader, durable: bool) -> Result<Segment> {
        let header = &SegmentHeader {
            recycled: self.recycled,
            version: if self.recycled {
                crate::codec::header::RECYCLED_SEGMENT_VERSION
            } else {
                header.version
            },
            ..*header
        };
        let path = format::segment_path(dir, header.segment_id);
        let tmp = self.tmp.clone();
        let result = (|| {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            header.encode(&mut head);
            self.file
                .write_all_at(&head, 0)
                .map_err(|e| Error::io("write header", &tmp, e))?;
            if durable && self.recycled {
                // Only the header: the rest of a reused file is zeros in memory, all dirty, and
                // an fsync would write them all (the records that follow are flushed as they
                // are committed; the zeros need not be durable, see `recycle`). The file's
                // size and allocation do not change; a block the older segment never wrote is
                // converted by the flush that first covers it, as in a fresh segment.
                self.map
                    .flush_range(0, SEGMENT_HEADER_LEN)
                    .map_err(|e| Error::io("msync", &tmp, e))?;
            } else if durable {
                self.file
                    .sync_all()
                    .map_err(|e| Error::io("fsync", &tmp, e))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
            if durable {
                sync_dir(dir)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let mut seg = Segment::from_parts(path, self.file, self.map, *header, self.len);
        seg.created_here = true;
        // A fresh segment has nothing published yet: open it for appends right after the header.
        seg.published.store(SEGMENT_HEADER_LEN, Ordering::Release);
        seg.reserve
            .store(SEGMENT_HEADER_LEN as u64, Ordering::Release);
        let synced = if durable { SEGMENT_HEADER_LEN } else { 0 };
        seg.synced.store(synced, Ordering::Release);
        seg.creation_synced.store(durable, Ordering::Release);
        *lock(&seg.scan) = ScanPos {
            pos: SEGMENT_HEADER_LEN,
            last_data: None,
        };
        Ok(seg)
    }

    /// Deletes the prepared file (it was not needed).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// `MADV_RANDOM`: no readahead and no fault-around, so the page cache holds this file in small
/// (4 KiB) folios. msync writes back whole folios: with the default advice a one-record commit
/// can write a 2 MiB folio. The price is a page fault per 4 KiB instead of per large folio, so
/// the log uses it only where commits flush small ranges (`Durability::Sync`).
fn random_access(map: &MmapRaw) -> io::Result<()> {
    map.advise(Advice::Random)
}

/// Whether unmapping a page (`MADV_DONTNEED`) while another thread may be storing into it
/// cannot lose those stores: Linux 6.2 and later, where the unmap flushes the TLB before it drops
/// the page's reverse mapping (commit 5df397dec7c4), so a writeback cleaning the page either
/// write-protects the mapping itself or runs after every stale TLB entry is gone. Before that, a
/// writeback in between could mark the page clean while another CPU kept storing through its
/// stale TLB entry ("possibly lost dirty data", the fix's own words). Read once from
/// `/proc/sys/kernel/osrelease`; anything unreadable or older, a kernel with the fix backported
/// included, counts as unsafe.
pub(crate) fn unmap_under_writers_is_safe() -> bool {
    static SAFE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAFE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| kernel_version(&release))
            .is_some_and(|v| v >= (6, 2))
    })
}

/// Whether writing a `Sync` log's zero pages back ahead of its appenders pays on the file system
/// holding `dir` (the default of `LogOptions::convert_extents_ahead`): on ext4 and XFS, which
/// preallocate unwritten extents and overwrite blocks in place. False where it cannot be told.
pub(crate) fn converts_extents_ahead_by_default(dir: &Path) -> bool {
    file_system_magic(dir).is_some_and(converts_extents_on)
}

/// `statfs(2)`'s `f_type` values of the file systems where converting ahead was measured to pay
/// (32-bit magic numbers; `f_type` itself is 32 or 64 bits, signed or not, by platform).
const EXT4_SUPER_MAGIC: u32 = 0xEF53;
const XFS_SUPER_MAGIC: u32 = 0x5846_5342;

fn converts_extents_on(magic: u32) -> bool {
    matches!(magic, EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC)
}

/// The file system type (`statfs(2)`'s `f_type`) of the one holding `path`.
#[cfg(target_os = "linux")]
fn file_system_magic(path: &Path) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `st` points to
    // writable memory the size of a `struct statfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: all-zero bytes are a valid `struct statfs` (integers only), and `statfs` returned
    // 0, so it filled it in.
    let st = unsafe { st.assume_init() };
    // The magic is 32 bits wide; `f_type` is i64 on glibc x86_64, u64 on 64-bit musl, 32 bits
    // on others: keep the low 32 bits.
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as u32)
}

#[cfg(not(target_os = "linux"))]
fn file_system_magic(_path: &Path) -> Option<u32> {
    None
}

/// `(major, minor)` of a kernel release string such as `6.18.44-cloud-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `MADV_POPULATE_WRITE` on the pages covering `[from, to)`: the kernel allocates the page-cache
/// pages and maps them writable now, so appends later take no page faults. It changes no byte,
/// so it is safe on any part of the mapping. Best effort: older kernels lack it.
fn prefault(map: &MmapRaw, len: usize, from: usize, to: usize) {
    let from = from & !(PAGE - 1);
    let to = to.min(len);
    if to > from {
        let _ = map.advise_range(Advice::PopulateWrite, from, to - from);
    }
}

/// Owner of a zero-copy view: keeps the segment (and so the mapping) alive.
struct MappedSlice {
    seg: Arc<Segment>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        // `slice` checked the range was published; `published` never decreases while shared.
        self.seg.bytes(self.start, self.end).unwrap_or(&[])
    }
}

/// A read-only, private mapping of a whole file that this crate wrote once and never changes
/// again (a snapshot): the bulk load reads it in place instead of copying it through a buffer.
///
/// Sound only for such files, which is the caller's contract: the bytes are shared `&[u8]`, so
/// nothing may write them while mapped. A snapshot is written under a temporary name, fsynced
/// and renamed into a directory this process holds the lock of; nothing writes it afterwards.
/// Another process truncating it anyway would make a later read of a cut page a SIGBUS, as it
/// would for any mapped file (the same contract as the log's segments).
#[derive(Debug)]
pub(crate) struct ImmutableFileMap {
    /// `None` for an empty file (which cannot be mapped).
    map: Option<memmap2::Mmap>,
}

impl ImmutableFileMap {
    /// Maps all of `file` (named `path` in errors), advising sequential reading.
    pub fn open(file: &File, path: &Path) -> Result<ImmutableFileMap> {
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len == 0 {
            return Ok(ImmutableFileMap { map: None });
        }
        let len = usize::try_from(len).map_err(|_| {
            Error::io(
                "mmap",
                path,
                io::Error::new(io::ErrorKind::FileTooLarge, "larger than the address space"),
            )
        })?;
        // SAFETY: a private read-only mapping of `len` bytes, the file's length. Rust sees the
        // bytes as an immutable `&[u8]`, which is sound because the file is immutable by this
        // type's contract (see the type's documentation): nothing writes it while it is mapped.
        let map = unsafe { MmapOptions::new().len(len).map(file) }
            .map_err(|e| Error::io("mmap", path, e))?;
        // A hint (readahead of a cold file); the mapping works without it.
        let _ = map.advise(Advice::Sequential);
        Ok(ImmutableFileMap { map: Some(map) })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::{converts_extents_on, file_system_magic, kernel_version};

    #[test]
    fn extents_are_converted_ahead_on_ext4_and_xfs_only() {
        assert!(converts_extents_on(0xEF53), "ext4 (and ext2/3)");
        assert!(converts_extents_on(0x5846_5342), "XFS");
        assert!(!converts_extents_on(0x9123_683E), "btrfs");
        assert!(!converts_extents_on(0x0102_1994), "tmpfs");
        assert!(!converts_extents_on(0x794C_7630), "overlayfs");
        assert!(!converts_extents_on(0), "unknown");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_file_system_type_is_read() {
        // /proc is procfs everywhere (PROC_SUPER_MAGIC); a missing path has no type.
        assert_eq!(
            file_system_magic(std::path::Path::new("/proc")),
            Some(0x9FA0)
        );
        assert_eq!(
            file_system_magic(std::path::Path::new("/no/such/directory/here")),
            None
        );
    }

    #[test]
    fn kernel_versions_parse_from_release_strings() {
        assert_eq!(kernel_version("6.18.44-cloud-amd64\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.2"), Some((6, 2)));
        assert_eq!(kernel_version("6.1-rc3"), Some((6, 1)));
        assert!(kernel_version("6.1.0").unwrap() < (6, 2));
        assert!(kernel_version("6.10.0").unwrap() >= (6, 2));
        assert_eq!(kernel_version("6"), None);
        assert_eq!(kernel_version("linux"), None);
        assert_eq!(kernel_version(""), None);
    }
}
