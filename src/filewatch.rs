//! Following files that are replaced while the process runs: serving certificates, the client
//! CA, Data Storage's tokens file, the client's bearer token. Kubernetes updates a mounted
//! Secret or projected token by writing a new directory and swapping the `..data` symlink, so
//! the file itself never changes: [`watch`] watches the *directory* and also polls, because
//! watches can miss events (some volume types, an overflowing queue) — the poll is the
//! guarantee, the watch only makes reloads quick. Where a value is needed per request rather
//! than in the background, [`StampedFile`] re-reads when the file's [`Stamp`] changed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

/// How often a watched directory is checked even without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// After a notification, wait this long so a multi-file update (certificate and key) settles.
const SETTLE: Duration = Duration::from_millis(100);

/// Calls `check` (on a blocking thread: it reads files) whenever something changes in `dir`,
/// and every `poll` in case a change went unnoticed, until `shutdown`. `check` compares what
/// it reads with what it holds, so a spurious call costs one read.
pub fn watch(dir: &Path, poll: Duration, shutdown: CancellationToken, mut check: impl FnMut() + Send + 'static) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        // Full means a check is already due; it will see this change too.
        let _ = tx.try_send(());
    })
    .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the directory; polling only");
            None
        }
    };
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let _keep_watching = watcher;
        let mut tick = tokio::time::interval(poll);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                Some(()) = rx.recv() => tokio::time::sleep(SETTLE).await,
            }
            // The closure goes to the blocking thread and comes back, so it may keep state.
            match tokio::task::spawn_blocking(move || {
                check();
                check
            })
            .await
            {
                Ok(c) => check = c,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "file check failed; no longer following the directory");
                    return;
                }
            }
        }
    });
}

/// The directory [`watch`] should watch for `file`.
pub fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What tells a file's versions apart without reading it: a rotation replaces the file (new
/// inode), rewrites it (new modification time), or both; the length catches a rewrite within
/// the file system's time granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl Stamp {
    pub async fn of(path: &Path) -> std::io::Result<Self> {
        Self::from_metadata(&tokio::fs::metadata(path).await?)
    }

    /// One `stat`, for callers that cannot await (a TLS verifier).
    pub fn of_blocking(path: &Path) -> std::io::Result<Self> {
        Self::from_metadata(&std::fs::metadata(path)?)
    }

    fn from_metadata(m: &std::fs::Metadata) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        Ok(Self {
            modified: m.modified()?,
            len: m.len(),
            inode: m.ino(),
        })
    }
}

/// A small text file read on use and kept until its [`Stamp`] changes: one `stat` per use, so
/// a rotated file is read at the first use after the rotation.
#[derive(Debug)]
pub struct StampedFile {
    path: PathBuf,
    cached: tokio::sync::Mutex<Option<(Stamp, String)>>,
}

impl StampedFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's content, trimmed (token files often end in a newline).
    pub async fn read(&self) -> std::io::Result<String> {
        let stamp = Stamp::of(&self.path).await?;
        let mut cached = self.cached.lock().await;
        if let Some((at, text)) = cached.as_ref() {
            if *at == stamp {
                return Ok(text.clone());
            }
        }
        let text = tokio::fs::read_to_string(&self.path).await?.trim().to_string();
        *cached = Some((stamp, text.clone()));
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The client's bearer token: a rotated file is read at the first use after the rotation.
    #[tokio::test]
    async fn a_stamped_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let f = StampedFile::new(path.clone());
        assert_eq!(f.read().await.unwrap(), "one");
        // Rewritten in place.
        std::fs::write(&path, "two").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(f.read().await.unwrap(), "two");
        // Replaced by a file of the same length and modification time: only the inode differs.
        let next = dir.path().join("next");
        std::fs::write(&next, "six").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&next)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(f.read().await.unwrap(), "six");
        std::fs::remove_file(&path).unwrap();
        assert!(f.read().await.is_err(), "a missing file is an error, not the old content");
    }

    #[tokio::test]
    async fn watch_calls_back_on_a_change_and_stops_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let seen = calls.clone();
        // A poll far away: only the notification can bring the second call in time.
        watch(dir.path(), Duration::from_secs(3600), shutdown.clone(), move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) < 1 {
            assert!(tokio::time::Instant::now() < deadline, "no first check");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::write(dir.path().join("f"), "x").unwrap();
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the change was not noticed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = calls.load(Ordering::SeqCst);
        std::fs::write(dir.path().join("g"), "y").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls.load(Ordering::SeqCst), after, "checked after shutdown");
    }
}
