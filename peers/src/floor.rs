//! The floor: what the hardware allows a naive state backend. A std `HashMap<Vec<u8>, Vec<u8>>`
//! holds the state; every mutation is also appended as a CRC32-framed record
//! (`[crc32 | len | lsn | payload]`, 8-byte aligned, the CRC over len, lsn and payload) into
//! preallocated (`fallocate`) memory-mapped segment files, advised `MADV_RANDOM` so that a flush
//! writes back exactly the dirty pages (as statejournal's segments). Durable commits `msync` the
//! range they wrote.
//! Recovery reads every segment, checks every CRC and re-inserts into a new map.

// Mapping a file is `unsafe` in memmap2 (another process could truncate it under us), and so is
// calling `fallocate`; the blocks below say why each is sound here. The rest of this crate denies `unsafe`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};

use crate::engine::{DurableWriter, Engine, Key, OpenCfg, KEY_LEN};

/// Bytes of a frame header: crc32, payload length, LSN.
const HEADER: usize = 4 + 4 + 8;
/// Segment size unless a workload expects less.
const MAX_SEGMENT: u64 = 256 << 20;

/// Operation tags (first payload byte).
const PUT: u8 = 1;
const INCR: u8 = 2;
const LIST_ADD: u8 = 3;

fn frame_len(payload: usize) -> usize {
    (HEADER + payload + 7) & !7
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("floor-{n:06}.log"))
}

/// Preallocated, memory-mapped segments that CRC32-framed records are appended to.
pub struct FrameLog {
    dir: PathBuf,
    segment_size: u64,
    map: MmapMut,
    segment: u32,
    at: usize,
    lsn: u64,
    /// Where the records of the open commit start in the current segment.
    commit_start: usize,
}

fn map_new_segment(dir: &Path, n: u32, size: u64) -> MmapMut {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment_path(dir, n))
        .expect("create a floor segment");
    let len = libc::off_t::try_from(size).expect("a segment size that fits off_t");
    // SAFETY: `fallocate` takes a descriptor we own (kept open by `file` for the call) and plain
    // integers; it touches no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        // No fallocate on this file system: a sparse file (blocks allocated on first write).
        file.set_len(size).expect("size a floor segment");
    }
    // SAFETY: the file was just created in a directory private to this benchmark run; nothing
    // else maps, truncates or writes it while the mapping lives (the mapping keeps it open).
    let map = unsafe { MmapMut::map_mut(&file) }.expect("map a floor segment");
    map.advise(memmap2::Advice::Random)
        .expect("madvise a floor segment");
    map
}

impl FrameLog {
    /// A new log in `dir` whose segments are sized for about `expected_bytes`.
    pub fn create(dir: &Path, expected_bytes: u64) -> FrameLog {
        let segment_size = expected_bytes
            .clamp(1 << 20, MAX_SEGMENT)
            .next_multiple_of(4096);
        FrameLog {
            dir: dir.to_path_buf(),
            segment_size,
            map: map_new_segment(dir, 0, segment_size),
            segment: 0,
            at: 0,
            lsn: 0,
            commit_start: 0,
        }
    }

    /// Appends one record made of `parts`, rolling to a new segment when this one is full (the
    /// full one is flushed first when `durable`).
    pub fn append(&mut self, parts: &[&[u8]], durable: bool) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let size = frame_len(len);
        if self.at + size + HEADER > self.map.len() {
            if durable {
                self.map
                    .flush_range(self.commit_start, self.at - self.commit_start)
                    .expect("msync a floor segment");
            }
            self.segment += 1;
            self.map = map_new_segment(&self.dir, self.segment, self.segment_size);
            self.at = 0;
            self.commit_start = 0;
        }
        self.lsn += 1;
        let frame = &mut self.map[self.at..self.at + size];
        frame[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        frame[8..16].copy_from_slice(&self.lsn.to_le_bytes());
        let mut o = HEADER;
        for p in parts {
            frame[o..o + p.len()].copy_from_slice(p);
            o += p.len();
        }
        let crc = crc32fast::hash(&frame[4..HEADER + len]);
        frame[0..4].copy_from_slice(&crc.to_le_bytes());
        self.at += size;
    }

    /// Makes every record since the last commit durable (`msync` of exactly their range).
    pub fn commit(&mut self) {
        self.map
            .flush_range(self.commit_start, self.at - self.commit_start)
            .expect("msync a floor segment");
        self.commit_start = self.at;
    }

    /// Reads every segment in `dir` in order, checks each record's CRC and calls `f` with its
    /// payload; returns the number of records. Stops at the first zero length (the end of the
    /// written data) or bad CRC (a torn tail).
    pub fn replay(dir: &Path, mut f: impl FnMut(&[u8])) -> u64 {
        let mut records = 0;
        for n in 0.. {
            let Ok(file) = File::open(segment_path(dir, n)) else {
                break;
            };
            // SAFETY: as in `map_new_segment`: the segment is private to this run and nothing
            // writes or truncates it while it is mapped (the writer closed it before this open).
            let map = unsafe { Mmap::map(&file) }.expect("map a floor segment");
            let mut at = 0;
            while at + HEADER <= map.len() {
                let len = u32::from_le_bytes(map[at + 4..at + 8].try_into().expect("4 bytes"));
                let len = len as usize;
                if len == 0 || at + HEADER + len > map.len() {
                    break;
                }
                let crc = u32::from_le_bytes(map[at..at + 4].try_into().expect("4 bytes"));
                if crc32fast::hash(&map[at + 4..at + HEADER + len]) != crc {
                    break;
                }
                f(&map[at + HEADER..at + HEADER + len]);
                records += 1;
                at += frame_len(len);
            }
        }
        records
    }
}

/// The floor engine: a std `HashMap` and a [`FrameLog`].
pub struct Floor {
    map: HashMap<Vec<u8>, Vec<u8>>,
    log: FrameLog,
    replayed: Option<u64>,
}

impl Floor {
    fn apply(map: &mut HashMap<Vec<u8>, Vec<u8>>, payload: &[u8]) {
        let (op, rest) = payload.split_first().expect("a tagged payload");
        let (key, data) = rest.split_at(KEY_LEN);
        match *op {
            PUT => put(map, key, data),
            INCR => put(map, key, data),
            LIST_ADD => map.entry(key.to_vec()).or_default().extend_from_slice(data),
            _ => {}
        }
    }
}

fn put(map: &mut HashMap<Vec<u8>, Vec<u8>>, key: &[u8], value: &[u8]) {
    match map.get_mut(key) {
        Some(v) => {
            v.clear();
            v.extend_from_slice(value);
        }
        None => {
            map.insert(key.to_vec(), value.to_vec());
        }
    }
}

impl Engine for Floor {
    type Writer = FloorWriter;

    fn open(dir: &Path, cfg: OpenCfg) -> Self {
        let mut map = HashMap::new();
        let replayed = if segment_path(dir, 0).exists() {
            Some(FrameLog::replay(dir, |p| Floor::apply(&mut map, p)))
        } else {
            None
        };
        // A recovered floor only serves reads (W5); a new one appends from segment 0.
        let log_dir = if replayed.is_some() {
            let d = dir.join("after-recovery");
            std::fs::create_dir_all(&d).expect("create the floor's directory");
            d
        } else {
            dir.to_path_buf()
        };
        Floor {
            map,
            log: FrameLog::create(&log_dir, cfg.expected_bytes),
            replayed,
        }
    }

    fn put(&mut self, key: &Key, value: &[u8]) {
        self.log.append(&[&[PUT], key, value], false);
        put(&mut self.map, key, value);
    }

    fn incr(&mut self, key: &Key) {
        let n = match self.map.get_mut(&key[..]) {
            Some(v) => {
                let n = u64::from_le_bytes(v[..8].try_into().expect("8 bytes")) + 1;
                v[..8].copy_from_slice(&n.to_le_bytes());
                n
            }
            None => {
                self.map.insert(key.to_vec(), 1u64.to_le_bytes().to_vec());
                1
            }
        };
        self.log.append(&[&[INCR], key, &n.to_le_bytes()], false);
    }

    fn list_add(&mut self, key: &Key, element: u64, _seq: u64) {
        let e = element.to_le_bytes();
        self.log.append(&[&[LIST_ADD], key, &e], false);
        match self.map.get_mut(&key[..]) {
            Some(v) => v.extend_from_slice(&e),
            None => {
                self.map.insert(key.to_vec(), e.to_vec());
            }
        }
    }

    fn get_len(&mut self, key: &Key) -> Option<usize> {
        self.map.get(&key[..]).map(|v| v.len())
    }

    fn replayed_records(&self) -> Option<u64> {
        self.replayed
    }

    fn close(self) {}

    fn writers(dir: &Path, threads: usize) -> Vec<FloorWriter> {
        (0..threads)
            .map(|t| {
                let sub = dir.join(format!("writer-{t}"));
                std::fs::create_dir_all(&sub).expect("create a writer's directory");
                FloorWriter(Floor {
                    map: HashMap::new(),
                    log: FrameLog::create(&sub, MAX_SEGMENT),
                    replayed: None,
                })
            })
            .collect()
    }
}

/// One writer thread's own floor; a commit is one record per key and one `msync`.
pub struct FloorWriter(Floor);

impl DurableWriter for FloorWriter {
    fn commit(&mut self, keys: &[Key], value: &[u8]) {
        let f = &mut self.0;
        for k in keys {
            f.log.append(&[&[PUT], k, value], true);
            put(&mut f.map, k, value);
        }
        f.log.commit();
    }
}
