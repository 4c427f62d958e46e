//! Where a restore builds a journal: a directory beside its target, renamed into place whole.
//!
//! A restore writes many files. Written into the target one by one, a crash partway would leave a
//! partial directory there, which the next open might take for a journal (with no `log.meta`
//! and no segment yet, `Journal::open` would even create a new, empty one). So every restore
//! (plain, key-group and merged) builds the journal in a fresh directory beside the target,
//! `.{name}.{kind}-{random:016x}.tmp` in the target's parent, fsyncs it, renames it to the target
//! (a missing or empty directory: `rename` replaces an empty one atomically) and fsyncs the
//! parent. The target therefore holds the complete restore or is as it was.
//!
//! While it works, a restore holds an exclusive `flock` on its directory. A failed (or dropped)
//! restore removes its directory; a crashed one leaves it behind, unlocked, and the next restore
//! into the same target removes it. A locked one belongs to a restore still running: the next
//! restore is refused with an error naming it rather than racing it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format;
use crate::segment::sync_dir;

/// The kinds of restore that stage beside a target (the infix of their directories' names).
const KINDS: [&str; 2] = ["restore", "merge"];

/// A restore's directory beside its target (see the module docs). Dropped unpublished, it is
/// removed.
#[derive(Debug)]
pub(crate) struct Staging {
    tmp: PathBuf,
    target: PathBuf,
    parent: PathBuf,
    /// Holds the `flock` that marks the directory as in use.
    lock: File,
    published: bool,
}

impl Staging {
    /// Checks that `target` is missing or an empty directory, removes what crashed restores into
    /// it left beside it, and creates and locks a fresh directory for a restore of `kind`.
    pub(crate) fn beside(target: &Path, kind: &'static str) -> Result<Staging> {
        let invalid = |reason: String| Error::InvalidOptions {
            name: "restore directory",
            reason,
        };
        let exists = match fs::read_dir(target) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(invalid(format!("{} is not empty", target.display())));
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("read directory", target, e)),
        };
        // The rename replaces the directory entry: through a symbolic link, the directory it
        // names is the one to replace.
        let target = if exists {
            fs::canonicalize(target).map_err(|e| Error::io("resolve", target, e))?
        } else {
            target.to_path_buf()
        };
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                invalid(format!(
                    "{} has no (UTF-8) file name to restore into",
                    target.display()
                ))
            })?
            .to_string();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io("create directory", &parent, e))?;
        if exists {
            let dev = |p: &Path| {
                fs::metadata(p)
                    .map(|m| m.dev())
                    .map_err(|e| Error::io("stat", p, e))
            };
            if dev(&target)? != dev(&parent)? {
                return Err(invalid(format!(
                    "{} is a mount point: a restore builds the journal beside it, in {}, and \
                     renames it into place, which cannot cross file systems; restore into a \
                     directory inside it",
                    target.display(),
                    parent.display()
                )));
            }
        }
        remove_leftovers(&parent, &name, &target)?;
        let tmp = parent.join(format!(
            ".{name}.{kind}-{:016x}{}",
            crate::log::random_id(),
            format::TMP_SUFFIX
        ));
        fs::create_dir(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
        let lock = match lock(&tmp) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::io(
                    "lock",
                    &tmp,
                    io::Error::other("a directory created just now is locked by another process"),
                ));
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        Ok(Staging {
            tmp,
            target,
            parent,
            lock,
            published: false,
        })
    }

    /// The directory to build the journal in.
    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where `path` (inside [`Staging::path`]) is once published.
    pub(crate) fn published_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.tmp) {
            Ok(rest) => self.target.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Makes the directory durable, renames it to the target (which must still be missing or
    /// empty) and makes the rename durable.
    pub(crate) fn publish(mut self) -> Result<()> {
        sync_dir(&self.tmp)?;
        fs::rename(&self.tmp, &self.target).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTEMPTY) | Some(libc::EEXIST) | Some(libc::ENOTDIR) => {
                Error::InvalidOptions {
                    name: "restore directory",
                    reason: format!(
                        "{} was filled while the restore ran; the restore is in {}",
                        self.target.display(),
                        self.tmp.display()
                    ),
                }
            }
            _ => Error::io("rename", &self.tmp, e),
        })?;
        self.published = true;
        sync_dir(&self.parent)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            // A failed or abandoned restore leaves nothing behind; what cannot be removed now is
            // removed by the next restore into the target.
            let _ = fs::remove_dir_all(&self.tmp);
        }
        // Explicitly: a child process forked meanwhile holds a copy of the descriptor, and the
        // `flock` would last as long as that copy (see `Shared`'s drop in `log`).
        let _ = self.lock.unlock();
    }
}

/// An exclusive, non-blocking `flock` on the directory `dir`: `None` if another holds one.
fn lock(dir: &Path) -> Result<Option<File>> {
    let f = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", dir, e)),
    }
}

/// Removes the directories that crashed restores into `name` left in `parent`; refuses if one is
/// in use by a restore still running.
fn remove_leftovers(parent: &Path, name: &str, target: &Path) -> Result<()> {
    let entries = fs::read_dir(parent).map_err(|e| Error::io("read directory", parent, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", parent, e))?;
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if !is_staging_name(n, name) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io("stat", &path, e))?
            .is_dir();
        if !is_dir {
            continue;
        }
        match lock(&path) {
            Ok(Some(held)) => {
                fs::remove_dir_all(&path).map_err(|e| Error::io("remove", &path, e))?;
                drop(held);
            }
            Ok(None) => {
                return Err(Error::InvalidOptions {
                    name: "restore directory",
                    reason: format!(
                        "another restore into {} is running: it holds {}",
                        target.display(),
                        path.display()
                    ),
                })
            }
            // Removed meanwhile (by a restore that just ended): nothing left to do.
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `file` is the name of a restore's directory beside target `name`:
/// `.{name}.{kind}-{16 hex digits}.tmp`.
fn is_staging_name(file: &str, name: &str) -> bool {
    let Some(rest) = file
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(format::TMP_SUFFIX))
    else {
        return false;
    };
    KINDS.iter().any(|kind| {
        rest.strip_prefix(kind)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_recognized_exactly() {
        assert!(is_staging_name(".job.restore-0123456789abcdef.tmp", "job"));
        assert!(is_staging_name(".job.merge-0123456789ABCDEF.tmp", "job"));
        for other in [
            ".job.restore-0123456789abcdef",
            ".job.restore-0123456789abcde.tmp",
            ".job.restore-0123456789abcdeg.tmp",
            ".jobs.restore-0123456789abcdef.tmp",
            ".job.pull-0123456789abcdef.tmp",
            "job.restore-0123456789abcdef.tmp",
            ".job.restore-0123456789abcdef.tmp.x",
        ] {
            assert!(!is_staging_name(other, "job"), "{other}");
        }
    }

    #[test]
    fn a_failed_restore_leaves_nothing_and_a_crashed_one_is_cleaned_up() {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("job");
        let s = Staging::beside(&target, "restore").unwrap();
        std::fs::write(s.path().join("x"), b"partial").unwrap();
        let leftover = s.path().to_path_buf();
        // A second restore meanwhile is refused: the first one holds its directory.
        let err = Staging::beside(&target, "restore").unwrap_err();
        assert!(err.to_string().contains("is running"), "{err}");
        drop(s);
        assert!(
            !leftover.exists(),
            "a dropped restore removes its directory"
        );
        assert!(!target.exists());

        // What a crash leaves: the directory, unlocked. The next restore removes it.
        std::fs::create_dir(&leftover).unwrap();
        std::fs::write(leftover.join("x"), b"partial").unwrap();
        let s = Staging::beside(&target, "merge").unwrap();
        assert!(
            !leftover.exists(),
            "the crashed restore's directory is removed"
        );
        std::fs::write(s.path().join("log.meta"), b"whole").unwrap();
        let file = s.published_path(&s.path().join("log.meta"));
        s.publish().unwrap();
        assert_eq!(file, target.join("log.meta"));
        assert_eq!(std::fs::read(&file).unwrap(), b"whole");
        let names: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["job"], "nothing but the target");
    }
}
