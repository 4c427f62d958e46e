//! An `ObjectStore` wrapper that injects failures, delays, holds and gates into writes (and
//! failures and holds into reads), and counts what reaches the store underneath (slatedb's
//! failing object store is the model).
#![allow(dead_code)]

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

#[derive(Debug, Default)]
struct Faults {
    /// Writes to paths containing `.0` fail while `.1 > 0` (each failure counts down).
    fail: Option<(String, u32)>,
    /// Writes to paths containing `.0` meet at this barrier first.
    gate: Option<(String, Arc<tokio::sync::Barrier>)>,
    /// Writes wait for a permit of this semaphore (given back at once).
    hold: Option<Arc<tokio::sync::Semaphore>>,
    /// Every call sleeps this long first.
    delay: Duration,
    /// GETs after this many more fail (each one: a restore does not retry).
    fail_gets_after: Option<u64>,
    /// GETs after this many more wait for a permit of the semaphore (given back at once).
    hold_gets_after: Option<(u64, Arc<tokio::sync::Semaphore>)>,
}

/// See the module docs.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Faults>,
    /// Successful object writes (PUTs and completed multipart uploads).
    pub writes: Arc<AtomicU64>,
    /// Bytes of them.
    pub bytes_written: Arc<AtomicU64>,
    /// Failures injected.
    pub injected: AtomicU32,
    /// GETs (whole or ranged) that reached the wrapper.
    pub gets: AtomicU64,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn injected(path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected failure writing {path}").into(),
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            faults: Mutex::default(),
            writes: Arc::default(),
            bytes_written: Arc::default(),
            injected: AtomicU32::new(0),
            gets: AtomicU64::new(0),
        })
    }

    /// The next `n` writes to paths containing `matching` fail.
    pub fn fail_writes(&self, matching: &str, n: u32) {
        self.faults.lock().unwrap().fail = Some((matching.to_string(), n));
    }

    /// Writes to paths containing `matching` wait at `barrier` first.
    pub fn gate_writes(&self, matching: &str, barrier: Arc<tokio::sync::Barrier>) {
        self.faults.lock().unwrap().gate = Some((matching.to_string(), barrier));
    }

    /// Every write waits until `sem` has a permit.
    pub fn hold_writes(&self, sem: Arc<tokio::sync::Semaphore>) {
        self.faults.lock().unwrap().hold = Some(sem);
    }

    /// After the next `n` GETs, every GET fails (`None`: none does).
    pub fn fail_gets_after(&self, n: Option<u64>) {
        self.faults.lock().unwrap().fail_gets_after = n;
    }

    /// After the next `n` GETs, every GET waits for a permit of `sem` first.
    pub fn hold_gets_after(&self, n: u64, sem: Arc<tokio::sync::Semaphore>) {
        self.faults.lock().unwrap().hold_gets_after = Some((n, sem));
    }

    /// Every call is slowed down by `d`.
    pub fn delay(&self, d: Duration) {
        self.faults.lock().unwrap().delay = d;
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::SeqCst)
    }

    async fn before_write(&self, path: &Path) -> Result<()> {
        let (fail, gate, hold, delay) = {
            let mut f = self.faults.lock().unwrap();
            let fail = match &mut f.fail {
                Some((m, n)) if *n > 0 && path.as_ref().contains(m.as_str()) => {
                    *n -= 1;
                    true
                }
                _ => false,
            };
            let gate = f
                .gate
                .as_ref()
                .filter(|(m, _)| path.as_ref().contains(m.as_str()))
                .map(|(_, b)| Arc::clone(b));
            (fail, gate, f.hold.clone(), f.delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(sem) = hold {
            drop(sem.acquire().await);
        }
        if let Some(b) = gate {
            b.wait().await;
        }
        if fail {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(injected(path));
        }
        Ok(())
    }

    async fn before_call(&self) {
        let delay = self.faults.lock().unwrap().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.before_write(location).await?;
        let len = payload.content_length() as u64;
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.bytes_written.fetch_add(len, Ordering::SeqCst);
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before_write(location).await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            bytes: 0,
            writes: Arc::clone(&self.writes),
            total: Arc::clone(&self.bytes_written),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before_call().await;
        self.gets.fetch_add(1, Ordering::SeqCst);
        let (fail, hold) = {
            let mut f = self.faults.lock().unwrap();
            let fail = match &mut f.fail_gets_after {
                Some(0) => true,
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            };
            let hold = match &mut f.hold_gets_after {
                Some((0, sem)) => Some(Arc::clone(sem)),
                Some((n, _)) => {
                    *n -= 1;
                    None
                }
                None => None,
            };
            (fail, hold)
        };
        if let Some(sem) = hold {
            drop(sem.acquire().await);
        }
        if fail {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected failure reading {location}").into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before_write(to).await?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Counts the bytes of a multipart upload's parts (reported to the store when it completes).
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    bytes: u64,
    writes: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.bytes += data.content_length() as u64;
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(self.bytes, Ordering::SeqCst);
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
