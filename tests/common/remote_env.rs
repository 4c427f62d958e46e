//! The stores the remote tests run against: `InMemory`, `LocalFileSystem`, and a real S3 server
//! (moto, started by `.ci/run`) when `SJ_S3_ENDPOINT` names one. Without it the S3 variants say
//! on stderr that they were skipped and why; under CI (`CI` set) a missing endpoint fails them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use statejournal::remote::RemoteStore;

pub const BUCKET: &str = "statejournal-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Local,
    S3,
}

/// A store for one test, under a prefix of its own.
pub struct Env {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    _tmp: Option<tempfile::TempDir>,
}

pub fn s3_endpoint() -> Option<String> {
    std::env::var("SJ_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
}

/// Creates the test bucket with a bare HTTP request (moto accepts unsigned requests; object_store
/// has no bucket API). An existing bucket is fine.
fn create_bucket(endpoint: &str) {
    let hostport = endpoint
        .strip_prefix("http://")
        .expect("SJ_S3_ENDPOINT must be http://host:port")
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).expect("connect to the S3 endpoint");
    write!(
        s,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.contains("BucketAlreadyOwnedByYou"),
        "creating bucket {BUCKET}: {resp}"
    );
}

pub fn unique(test: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{test}-{:016x}", h.finish())
}

impl Env {
    pub fn new(kind: Kind, test: &str) -> Option<Env> {
        let prefix = unique(test);
        match kind {
            Kind::Memory => Some(Env {
                store: Arc::new(InMemory::new()),
                prefix,
                _tmp: None,
            }),
            Kind::Local => {
                let tmp = tempfile::tempdir().unwrap();
                let store = LocalFileSystem::new_with_prefix(tmp.path()).unwrap();
                Some(Env {
                    store: Arc::new(store),
                    prefix,
                    _tmp: Some(tmp),
                })
            }
            Kind::S3 => {
                let Some(endpoint) = s3_endpoint() else {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "CI must run the S3 tests: SJ_S3_ENDPOINT is not set (.ci/run starts \
                         moto and sets it)"
                    );
                    // Straight to the stderr handle, past the test harness's capture: a skip
                    // must be visible, never a silent pass.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED {test} on S3: SJ_S3_ENDPOINT is not set (run .ci/run, or start \
                         `moto_server -H 127.0.0.1 -p PORT` and export \
                         SJ_S3_ENDPOINT=http://127.0.0.1:PORT)"
                    );
                    return None;
                };
                create_bucket(&endpoint);
                let store = AmazonS3Builder::new()
                    .with_endpoint(&endpoint)
                    .with_allow_http(true)
                    .with_bucket_name(BUCKET)
                    .with_region("us-east-1")
                    .with_access_key_id("test")
                    .with_secret_access_key("test")
                    .build()
                    .unwrap();
                Some(Env {
                    store: Arc::new(store),
                    prefix,
                    _tmp: None,
                })
            }
        }
    }

    pub fn remote(&self) -> RemoteStore {
        RemoteStore::new(Arc::clone(&self.store), &self.prefix).unwrap()
    }

    pub fn remote_over(&self, store: Arc<dyn ObjectStore>) -> RemoteStore {
        RemoteStore::new(store, &self.prefix).unwrap()
    }
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn memory() {
                super::$name(super::Kind::Memory)
            }
            #[test]
            fn local_fs() {
                super::$name(super::Kind::Local)
            }
            #[test]
            fn s3() {
                super::$name(super::Kind::S3)
            }
        }
    )*};
}
