//! Reading snapshot files: [`SnapshotReader::open`] verifies the header, trailer and footer;
//! [`Cursor`] and [`SnapshotReader::for_each_block`] read the blocks of a key-group range.
//!
//! Both read paths share [`BlockWalker`], which reads the range's bytes (one contiguous region of
//! the file, known from the verified footer index) with `pread` in chunks of [`READ_CHUNK`] bytes
//! into one reused buffer, never past the end of the range, and CRC-checks each block before its
//! entries are decoded. Entries are never copied or allocated: they borrow the buffer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec::{
    block_len, decode_footer, decode_trailer, verify_block, verify_footer_crc, BlockDecoder,
    DecodeCtx, EntryPos, SnapError, SnapshotHeader, BLOCK_HEADER_LEN, HEADER_LEN, SNAPSHOT_VERSION,
    TRAILER_LEN,
};
use super::{Entry, KeyGroupIndexEntry, SnapshotMeta, StateInfo};
use crate::error::{CorruptionKind, Error, Result};
use crate::format::parse_snapshot_file_name;
use crate::segment::ImmutableFileMap;
use crate::KeyGroupRange;

/// Bytes read at a time (more when a block is larger). Large enough that the system call and the
/// copy of a block straddling two reads are a small share of the work.
const READ_CHUNK: usize = 2 << 20;

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::corrupt(
        path,
        offset,
        CorruptionKind::BadSnapshot {
            detail: detail.into(),
        },
    )
}

/// Maps a codec error about bytes that start at file offset `base` to an error naming the file;
/// the corruption's offset is `report_at` (the start of the damaged structure).
fn snap_error(path: &Path, report_at: u64, base: u64, what: &str, e: SnapError) -> Error {
    match e {
        SnapError::UnsupportedVersion(found) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: SNAPSHOT_VERSION,
        },
        SnapError::Bad { at, detail } => corrupt(
            path,
            report_at,
            format!("{what}: {detail} (byte {})", base.saturating_add(at as u64)),
        ),
    }
}

/// The same error again, for a cursor asked to move on after it failed.
fn again(e: &Error, path: &Path) -> Error {
    match e {
        Error::Corruption(c) => Error::Corruption(c.clone()),
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => corrupt(path, 0, format!("the cursor failed earlier: {other}")),
    }
}

/// An open, verified snapshot file.
#[derive(Debug)]
pub(crate) struct SnapshotReader {
    file: File,
    path: PathBuf,
    len: u64,
    footer_offset: u64,
    meta: SnapshotMeta,
    index: Vec<KeyGroupIndexEntry>,
}

impl SnapshotReader {
    /// Opens a snapshot and verifies its header, trailer and footer (not its blocks: those are
    /// verified as they are read). If the file name is a snapshot name, its LSN must be the
    /// header's.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let min = (HEADER_LEN + TRAILER_LEN) as u64;
        let short = || {
            corrupt(
                path,
                0,
                format!("{len} bytes, shorter than the {min} of an empty snapshot"),
            )
        };
        if len < HEADER_LEN as u64 {
            return Err(short());
        }
        let mut head = [0u8; HEADER_LEN];
        read_at(&file, path, &mut head, 0)?;
        let header =
            SnapshotHeader::decode(&head).map_err(|e| snap_error(path, 0, 0, "header", e))?;
        if len < min {
            return Err(short());
        }
        if let Some(named) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_snapshot_file_name)
        {
            if named != header.lsn {
                return Err(corrupt(
                    path,
                    0,
                    format!(
                        "the header says LSN {} but the file name says {named} (renamed or swapped file)",
                        header.lsn
                    ),
                ));
            }
        }

        let trailer_at = len - TRAILER_LEN as u64;
        let mut tbuf = [0u8; TRAILER_LEN];
        read_at(&file, path, &mut tbuf, trailer_at)?;
        let trailer = decode_trailer(&tbuf, len)
            .map_err(|e| snap_error(path, trailer_at, trailer_at, "trailer", e))?;
        let footer_offset = trailer.footer_offset;
        // Validated by `decode_trailer`: the footer and trailer lie within the file.
        let tail_len = usize::try_from(len - footer_offset)
            .map_err(|_| corrupt(path, trailer_at, "footer too large"))?;
        let mut tail = vec![0u8; tail_len];
        read_at(&file, path, &mut tail, footer_offset)?;
        verify_footer_crc(&tail, &trailer)
            .map_err(|e| snap_error(path, footer_offset, footer_offset, "footer", e))?;
        let footer = tail.get(..trailer.footer_len as usize).unwrap_or(&[]);
        let (meta, index) = decode_footer(footer, &header, footer_offset)
            .map_err(|e| snap_error(path, footer_offset, footer_offset, "footer", e))?;
        Ok(SnapshotReader {
            file,
            path: path.to_path_buf(),
            len,
            footer_offset,
            meta,
            index,
        })
    }

    /// What the snapshot holds.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Where the blocks of each non-empty key group are, in key-group order.
    pub fn index(&self) -> &[KeyGroupIndexEntry] {
        &self.index
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The index entries of the key groups in `range`.
    fn run(&self, range: KeyGroupRange) -> &[KeyGroupIndexEntry] {
        let lo = self.index.partition_point(|e| e.kg < range.start());
        let hi = self.index.partition_point(|e| e.kg < range.end()).max(lo);
        self.index.get(lo..hi).unwrap_or(&[])
    }

    /// A sorted cursor over the entries of the key groups in `range`. Only their blocks are read,
    /// each CRC-checked before use; nothing is read before the first [`Cursor::advance`].
    pub fn cursor(&self, range: KeyGroupRange) -> Cursor<'_> {
        let run = self.run(range);
        Cursor {
            walker: BlockWalker::new(self, run),
            ctx: DecodeCtx::new(&self.meta.states),
            block: None,
            current: None,
            states: &self.meta.states,
            footer_offset: self.footer_offset,
            full: run.len() == self.index.len(),
            state: CursorState::Reading,
        }
    }

    /// The bulk path: calls `f` with each verified block of the key groups in `range`, in order.
    /// `f` iterates the block's entries (borrowed from the read buffer); whatever it leaves
    /// unread is decoded and checked after it returns, so every block is verified completely.
    /// Stops at the first error, `f`'s or the file's.
    pub fn for_each_block<F>(&self, range: KeyGroupRange, f: F) -> Result<()>
    where
        F: FnMut(u16, &mut BlockEntries<'_>) -> Result<()>,
    {
        let run = self.run(range);
        self.walk_blocks(BlockWalker::new(self, run), run, f)
    }

    /// Maps the whole file, for [`SnapshotReader::for_each_mapped_block`].
    pub fn map(&self) -> Result<ImmutableFileMap> {
        let map = ImmutableFileMap::open(&self.file, &self.path)?;
        if map.bytes().len() as u64 != self.len {
            return Err(corrupt(
                &self.path,
                0,
                format!(
                    "the file is {} bytes long now, {} when it was opened (changed while in use)",
                    map.bytes().len(),
                    self.len
                ),
            ));
        }
        Ok(map)
    }

    /// [`SnapshotReader::for_each_block`] reading the blocks in place from `map` (this file's
    /// mapping, [`SnapshotReader::map`]), copying nothing: a block's payload is
    /// `map.bytes()[entries.payload_offset()..][..entries.payload().len()]`, valid as long as
    /// the mapping is.
    pub fn for_each_mapped_block<F>(
        &self,
        map: &ImmutableFileMap,
        range: KeyGroupRange,
        f: F,
    ) -> Result<()>
    where
        F: FnMut(u16, &mut BlockEntries<'_>) -> Result<()>,
    {
        let run = self.run(range);
        self.walk_blocks(BlockWalker::mapped(self, run, map.bytes()), run, f)
    }

    fn walk_blocks<F>(
        &self,
        mut walker: BlockWalker<'_>,
        run: &[KeyGroupIndexEntry],
        mut f: F,
    ) -> Result<()>
    where
        F: FnMut(u16, &mut BlockEntries<'_>) -> Result<()>,
    {
        let mut ctx = DecodeCtx::new(&self.meta.states);
        while let Some(b) = walker.next_block()? {
            if b.first_in_group {
                ctx.start_key_group();
            }
            let mut entries = BlockEntries {
                payload: walker.bytes().get(b.start..b.end).unwrap_or(&[]),
                kg: b.kg,
                offset: b.offset,
                entry_count: b.entry_count,
                path: &self.path,
                decoder: BlockDecoder::new(b.entry_count),
                ctx: &mut ctx,
                failed: None,
            };
            f(b.kg, &mut entries)?;
            entries.drain()?;
        }
        if run.len() == self.index.len() {
            check_totals(&self.path, self.footer_offset, &self.meta.states, &ctx)?;
        }
        Ok(())
    }
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset)
        .map_err(|e| Error::io("read", path, e))
}

/// After a pass over every block: the registry's per-state totals must be what the blocks hold.
fn check_totals(
    path: &Path,
    footer_offset: u64,
    states: &[StateInfo],
    ctx: &DecodeCtx,
) -> Result<()> {
    for (s, &(entries, bytes)) in states.iter().zip(ctx.tally()) {
        if (s.entries, s.payload_bytes) != (entries, bytes) {
            return Err(corrupt(
                path,
                footer_offset,
                format!(
                    "footer: state {} ({:?}) has {} entries of {} bytes in the registry, {entries} of {bytes} in the blocks",
                    s.id, s.name, s.entries, s.payload_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// A verified block in the walker's buffer.
#[derive(Debug, Clone, Copy)]
struct BlockRef {
    kg: u16,
    /// File offset of the block.
    offset: u64,
    /// The payload in the walker's buffer.
    start: usize,
    end: usize,
    entry_count: u32,
    /// The first block of its key group.
    first_in_group: bool,
}

/// Reads and verifies the blocks of a run of key groups, in order.
#[derive(Debug)]
struct BlockWalker<'r> {
    file: &'r File,
    path: &'r Path,
    run: &'r [KeyGroupIndexEntry],
    /// The run's key group being read.
    group: usize,
    /// File offset of the next block.
    at: u64,
    /// Blocks and entries of the current key group so far.
    blocks: u32,
    entries: u64,
    /// `buf[..buf_len]` holds the file's bytes from `buf_off`.
    buf: Vec<u8>,
    buf_off: u64,
    buf_len: usize,
    /// End of the run's region: nothing at or past it is read.
    end: u64,
    bytes_read: u64,
    /// The whole file, mapped: blocks are read in place and `buf` is unused.
    mapped: Option<&'r [u8]>,
}

impl<'r> BlockWalker<'r> {
    fn new(reader: &'r SnapshotReader, run: &'r [KeyGroupIndexEntry]) -> Self {
        // Offsets and lengths were validated against the file by `decode_footer`.
        let (at, end) = match (run.first(), run.last()) {
            (Some(f), Some(l)) => (f.offset, l.offset.saturating_add(l.bytes)),
            _ => (0, 0),
        };
        BlockWalker {
            file: &reader.file,
            path: &reader.path,
            run,
            group: 0,
            at,
            blocks: 0,
            entries: 0,
            buf: Vec::new(),
            buf_off: 0,
            buf_len: 0,
            end,
            bytes_read: 0,
            mapped: None,
        }
    }

    /// The walker over a mapping of the whole file (its length checked against the reader's).
    fn mapped(reader: &'r SnapshotReader, run: &'r [KeyGroupIndexEntry], map: &'r [u8]) -> Self {
        BlockWalker {
            mapped: Some(map),
            ..Self::new(reader, run)
        }
    }

    /// What `fill`'s offsets index: the mapping, or the read buffer.
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self.mapped {
            Some(m) => m,
            None => &self.buf,
        }
    }

    fn next_block(&mut self) -> Result<Option<BlockRef>> {
        loop {
            let Some(&group) = self.run.get(self.group) else {
                return Ok(None);
            };
            let group_end = group.offset.saturating_add(group.bytes);
            if self.at >= group_end {
                if self.blocks != group.blocks || self.entries != group.entries {
                    return Err(corrupt(
                        self.path,
                        group.offset,
                        format!(
                            "key group {}: the index says {} blocks with {} entries, the file holds {} blocks with {} entries",
                            group.kg, group.blocks, group.entries, self.blocks, self.entries
                        ),
                    ));
                }
                self.group += 1;
                self.blocks = 0;
                self.entries = 0;
                continue;
            }
            let at = self.at;
            let room = group_end - at;
            let what = || format!("block of key group {}", group.kg);
            if room < BLOCK_HEADER_LEN as u64 {
                return Err(corrupt(
                    self.path,
                    at,
                    format!(
                        "{}: the key group's blocks end {room} bytes into a block header",
                        what()
                    ),
                ));
            }
            let s = self.fill(at, BLOCK_HEADER_LEN)?;
            let len = self.bytes().get(s..).and_then(block_len).unwrap_or(0);
            if len > room {
                return Err(corrupt(
                    self.path,
                    at,
                    format!(
                        "{}: a block of {len} bytes runs past the end of the key group's blocks at {group_end}",
                        what()
                    ),
                ));
            }
            let len = usize::try_from(len)
                .map_err(|_| corrupt(self.path, at, format!("{}: too large to read", what())))?;
            let s = self.fill(at, len)?;
            let block = self.bytes().get(s..s + len).unwrap_or(&[]);
            let h = verify_block(block).map_err(|e| snap_error(self.path, at, at, &what(), e))?;
            if h.kg != group.kg {
                return Err(corrupt(
                    self.path,
                    at,
                    format!("{}: the block header says key group {}", what(), h.kg),
                ));
            }
            self.blocks = self.blocks.saturating_add(1);
            self.entries = self.entries.saturating_add(u64::from(h.entry_count));
            self.at = at + len as u64;
            return Ok(Some(BlockRef {
                kg: h.kg,
                offset: at,
                start: s + BLOCK_HEADER_LEN,
                end: s + len,
                entry_count: h.entry_count,
                first_in_group: self.blocks == 1,
            }));
        }
    }

    /// Makes the buffer hold file bytes `at .. at + n` (which lie within the run's region);
    /// returns where they start in the buffer. Reads ahead up to [`READ_CHUNK`] bytes, never past
    /// the region.
    fn fill(&mut self, at: u64, n: usize) -> Result<usize> {
        let have_end = self.buf_off + self.buf_len as u64;
        let need_end = at.saturating_add(n as u64);
        if self.mapped.is_none() && at >= self.buf_off && need_end <= have_end {
            return Ok((at - self.buf_off) as usize);
        }
        if need_end > self.end {
            return Err(corrupt(
                self.path,
                at,
                "a block runs past the end of the key groups' blocks",
            ));
        }
        if self.mapped.is_some() {
            // In place: `need_end <= self.end <= the file's length`, the mapping's. `buf_off`
            // marks how far the file was read (each byte counts once, as when buffered).
            self.bytes_read += need_end.saturating_sub(at.max(self.buf_off));
            self.buf_off = self.buf_off.max(need_end);
            return Ok(at as usize);
        }
        // Keep what was read ahead of `at`; the previous blocks are done with.
        let keep = if at >= self.buf_off && at < have_end {
            (have_end - at) as usize
        } else {
            0
        };
        if keep > 0 {
            let from = (at - self.buf_off) as usize;
            self.buf.copy_within(from..self.buf_len, 0);
        }
        self.buf_off = at;
        self.buf_len = keep;
        // `n <= self.end - at` was checked above.
        let want = (self.end - at).min(n.max(READ_CHUNK) as u64) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let dst = self.buf.get_mut(keep..want).unwrap_or(&mut []);
        read_at(self.file, self.path, dst, at + keep as u64)?;
        self.bytes_read += (want - keep) as u64;
        self.buf_len = want;
        Ok(0)
    }
}

#[derive(Debug)]
enum CursorState {
    Reading,
    Done,
    Failed(Error),
}

/// A sorted cursor over the entries of a key-group range of a snapshot.
#[derive(Debug)]
pub(crate) struct Cursor<'r> {
    walker: BlockWalker<'r>,
    ctx: DecodeCtx,
    block: Option<(BlockRef, BlockDecoder)>,
    current: Option<EntryPos>,
    states: &'r [StateInfo],
    footer_offset: u64,
    /// The range holds every block of the file: check the registry's totals at the end.
    full: bool,
    state: CursorState,
}

impl Cursor<'_> {
    /// Moves to the next entry; `Ok(false)` at the end. Errors name the file and the block's byte
    /// offset; after an error the cursor returns the same error again.
    pub fn advance(&mut self) -> Result<bool> {
        match &self.state {
            CursorState::Reading => {}
            CursorState::Done => return Ok(false),
            CursorState::Failed(e) => return Err(again(e, self.walker.path)),
        }
        match self.step() {
            Ok(more) => {
                if !more {
                    self.state = CursorState::Done;
                }
                Ok(more)
            }
            Err(e) => {
                self.current = None;
                self.state = CursorState::Failed(again(&e, self.walker.path));
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<bool> {
        self.current = None;
        loop {
            if let Some((b, decoder)) = &mut self.block {
                let payload = self.walker.buf.get(b.start..b.end).unwrap_or(&[]);
                match decoder.next(payload, &mut self.ctx) {
                    Ok(Some(pos)) => {
                        self.current = Some(pos);
                        return Ok(true);
                    }
                    Ok(None) => self.block = None,
                    Err(e) => {
                        let what = format!("block of key group {}", b.kg);
                        let base = b.offset + BLOCK_HEADER_LEN as u64;
                        return Err(snap_error(self.walker.path, b.offset, base, &what, e));
                    }
                }
            }
            match self.walker.next_block()? {
                Some(b) => {
                    if b.first_in_group {
                        self.ctx.start_key_group();
                    }
                    self.block = Some((b, BlockDecoder::new(b.entry_count)));
                }
                None => {
                    if self.full {
                        check_totals(self.walker.path, self.footer_offset, self.states, &self.ctx)?;
                    }
                    return Ok(false);
                }
            }
        }
    }

    /// The current entry (after [`advance`](Self::advance) returned `true`), borrowing the
    /// cursor's block buffer.
    pub fn entry(&self) -> Option<Entry<'_>> {
        let pos = self.current?;
        let (b, _) = self.block.as_ref()?;
        let payload = self.walker.buf.get(b.start..b.end)?;
        Some(pos.entry(b.kg, payload))
    }

    /// Bytes of the file read so far (only the range's blocks are ever read).
    #[cfg(test)]
    pub fn bytes_read(&self) -> u64 {
        self.walker.bytes_read
    }
}

/// The entries of one CRC-verified block, for [`SnapshotReader::for_each_block`]. Iterating
/// decodes them one by one, checking their structure and order; an error ends the iteration.
#[derive(Debug)]
pub(crate) struct BlockEntries<'a> {
    payload: &'a [u8],
    kg: u16,
    offset: u64,
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    entry_count: u32,
    path: &'a Path,
    decoder: BlockDecoder,
    ctx: &'a mut DecodeCtx,
    failed: Option<Error>,
}

impl BlockEntries<'_> {
    /// Entries the block holds (from its verified header).
    #[cfg(any(test, feature = "testing"))]
    pub fn entry_count(&self) -> u32 {
        self.entry_count
    }

    /// Decodes whatever was not iterated, so that the whole block is verified.
    fn drain(&mut self) -> Result<()> {
        for e in self.by_ref() {
            e?;
        }
        match &self.failed {
            Some(e) => Err(again(e, self.path)),
            None => Ok(()),
        }
    }
}

impl<'a> BlockEntries<'a> {
    /// The block's key group.
    pub fn kg(&self) -> u16 {
        self.kg
    }

    /// The block's entry bytes: what the positions [`BlockEntries::next_pos`] returns index.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The file offset of [`BlockEntries::payload`].
    pub fn payload_offset(&self) -> u64 {
        self.offset + BLOCK_HEADER_LEN as u64
    }

    /// The next entry's position in [`BlockEntries::payload`], decoded and checked as the
    /// iterator does (for a consumer that copies the payload elsewhere).
    #[inline]
    pub fn next_pos(&mut self) -> Option<Result<EntryPos>> {
        if self.failed.is_some() {
            return None;
        }
        match self.decoder.next(self.payload, self.ctx) {
            Ok(Some(pos)) => Some(Ok(pos)),
            Ok(None) => None,
            Err(e) => {
                let what = format!("block of key group {}", self.kg);
                let base = self.offset + BLOCK_HEADER_LEN as u64;
                let err = snap_error(self.path, self.offset, base, &what, e);
                self.failed = Some(again(&err, self.path));
                Some(Err(err))
            }
        }
    }
}

impl<'a> Iterator for BlockEntries<'a> {
    type Item = Result<Entry<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed.is_some() {
            return None;
        }
        match self.decoder.next(self.payload, self.ctx) {
            Ok(Some(pos)) => Some(Ok(pos.entry(self.kg, self.payload))),
            Ok(None) => None,
            Err(e) => {
                let what = format!("block of key group {}", self.kg);
                let base = self.offset + BLOCK_HEADER_LEN as u64;
                let err = snap_error(self.path, self.offset, base, &what, e);
                self.failed = Some(again(&err, self.path));
                Some(Err(err))
            }
        }
    }
}
