//! Retention and garbage collection in the store.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::{layout, RemoteStore};
use crate::error::{Error, Result};

/// What a remote garbage collection deleted and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteGcReport {
    /// Remote checkpoints kept (their numbers).
    pub kept: Vec<u64>,
    /// Manifests deleted (their numbers).
    pub manifests_deleted: Vec<u64>,
    /// Snapshot and chunk objects deleted.
    pub objects_deleted: usize,
    /// Bytes of them.
    pub bytes_deleted: u64,
    /// Unreferenced objects left because they are younger than `min_age` (an upload in progress
    /// may be about to name them).
    pub young_unreferenced: usize,
    /// Old epoch markers deleted (the newest is always kept).
    pub epochs_deleted: usize,
}

impl RemoteStore {
    /// Keeps the newest `retain` remote checkpoints (at least 1), deletes the older manifests,
    /// then every snapshot and log chunk no kept manifest names and that is at least `min_age`
    /// old, then the epoch markers below the newest.
    ///
    /// Manifests go first, so a crash mid-way leaves unreferenced objects (which the next run
    /// deletes), never a manifest naming a missing object. `min_age` protects the objects of a
    /// push in progress elsewhere, which no manifest names yet: give it more than the longest
    /// push takes (a few minutes), or zero when no writer is pushing (say, the writer itself,
    /// between pushes: [`Shipper`](super::Shipper) pushes never overlap its own collection
    /// if both are awaited in turn).
    pub async fn collect_garbage(
        &self,
        retain: usize,
        min_age: Duration,
    ) -> Result<RemoteGcReport> {
        if retain == 0 {
            return Err(Error::InvalidOptions {
                name: "retain",
                reason: "at least one remote checkpoint must be kept".into(),
            });
        }
        let mut report = RemoteGcReport::default();
        let seqs = self.manifest_seqs().await?;
        let split = seqs.len().saturating_sub(retain);
        let (old, kept) = seqs.split_at(split);
        // Read every kept manifest first: if one cannot be read, nothing is deleted.
        let mut referenced = HashSet::new();
        for &seq in kept {
            let m = self.manifest(seq).await?;
            referenced.extend(m.objects().map(str::to_string));
        }
        report.kept = kept.to_vec();
        for &seq in old {
            self.delete(&layout::manifest_key(seq)).await?;
            report.manifests_deleted.push(seq);
        }
        let now_millis = if min_age.is_zero() {
            None
        } else {
            Some(wall_clock_millis())
        };
        let mut doomed = Vec::new();
        for folder in [layout::SNAPSHOTS, layout::LOG] {
            for (key, meta) in self.list(folder).await? {
                if referenced.contains(&key) {
                    continue;
                }
                let age_millis =
                    now_millis.map(|now| now.saturating_sub(meta.last_modified.timestamp_millis()));
                if age_millis.is_some_and(|a| (a as u128) < min_age.as_millis()) {
                    report.young_unreferenced += 1;
                    continue;
                }
                report.bytes_deleted += meta.size;
                doomed.push(key);
            }
        }
        report.objects_deleted = doomed.len();
        futures::stream::iter(doomed)
            .map(|key| async move { self.delete(&key).await })
            .buffer_unordered(self.opts.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let mut epochs: Vec<(u64, String)> = self
            .list(layout::EPOCHS)
            .await?
            .into_iter()
            .filter_map(|(k, _)| Some((layout::parse_epoch_name(k.rsplit('/').next()?)?, k)))
            .collect();
        epochs.sort_unstable();
        epochs.pop(); // the newest stays: it is what fences older writers
        for (_, key) in epochs {
            self.delete(&key).await?;
            report.epochs_deleted += 1;
        }
        Ok(report)
    }

    /// Deletes `key`; one that is already gone is not an error (stores differ there).
    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

/// Milliseconds since the Unix epoch, to compare with the stores' `last_modified`: object ages
/// are wall-clock facts of the store, not durations this process measures, so no injected clock
/// applies.
#[allow(clippy::disallowed_methods)]
fn wall_clock_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
