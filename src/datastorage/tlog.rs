//! The transparency log in Data Storage (docs/transparency-log.md): every stored item's entry
//! is written as a *pending* row in the transaction that stores the item; a sequencer round,
//! one at a time, gives pending entries the next contiguous indexes in (stored_at, kind, id)
//! order, stores them with the tile hashes, clears them from the queue and signs a checkpoint,
//! all in one transaction. Writers never wait for the log: sequencing happens after commit,
//! so an index is never taken by a transaction that later rolls back.
//!
//! Only the hashes of the tile levels (tree levels 0, 8, 16, …) are stored — the tiles'
//! content; every other stored hash a proof needs is computed from them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::store::{DbError, DbResult, LogItems, LogLag, NewAmendment, Prepared, PreparedEvent, RoundReport, Store, StoredCheckpoint};
use crate::evidence::entry::{Entry, Kind};
use crate::evidence::merkle::{leaf_hash, CompactRange, Hash, HashReader, ProofError};
use crate::evidence::note::{Checkpoint, SignerKey};
use crate::evidence::tiles::{Tile, TileHashReader, HASH_SIZE, TILE_HEIGHT, TILE_WIDTH};

/// Pending entries one round takes at most (a bounded transaction); a full round is followed
/// by the next at once.
pub const MAX_PER_ROUND: u32 = 20_000;

/// An item's entry, queued in the transaction that stores the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub kind: i16,
    pub id: String,
    pub stored_at: DateTime<Utc>,
    pub entry: Vec<u8>,
}

impl Pending {
    /// The entry of an item whose stored JSON text has SHA-256 `digest`. Refused (nothing is
    /// stored) when the item cannot be encoded, so nothing is stored without an entry.
    pub fn new(kind: Kind, id: &str, cr_uid: Option<&str>, stored_at: DateTime<Utc>, digest: Hash) -> DbResult<Self> {
        let entry = Entry {
            kind,
            id: id.to_string(),
            cr_uid: cr_uid.unwrap_or_default().to_string(),
            stored_at,
            content_sha256: digest,
        }
        .encode()
        .map_err(|e| DbError::Value(e.to_string()))?;
        Ok(Self {
            kind: i16::from(kind.byte()),
            id: id.to_string(),
            stored_at,
            entry,
        })
    }
}

/// The entries of new records, all stored at one moment.
pub fn record_entries<'a>(records: impl IntoIterator<Item = &'a Prepared>, stored_at: DateTime<Utc>) -> DbResult<Vec<Pending>> {
    records
        .into_iter()
        .map(|p| Pending::new(Kind::Record, &p.rec.id, p.rec.uid.as_deref(), stored_at, p.digest))
        .collect()
}

/// The entry of a new amendment (stored at the moment it is amended; about the original's CR).
pub fn amendment_entry(a: &NewAmendment) -> DbResult<Pending> {
    Pending::new(
        Kind::Amendment,
        &a.amendment_id,
        a.prepared.rec.uid.as_deref(),
        a.amended_at,
        a.prepared.digest,
    )
}

/// The entry of a new break-glass event.
pub fn event_entry(e: &PreparedEvent, stored_at: DateTime<Utc>) -> DbResult<Pending> {
    Pending::new(Kind::BreakGlass, &e.event.id, Some(&e.event.uid), stored_at, e.digest)
}

/// One entry with its index, as a round stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub index: u64,
    pub kind: i16,
    pub id: String,
    pub entry: Vec<u8>,
}

/// What a round writes: the entries, the tile-level hashes they complete, and the tree after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub entries: Vec<Sequenced>,
    /// (tree level, index, hash), tree levels multiples of 8 only.
    pub hashes: Vec<(u8, u64, Hash)>,
    pub range: CompactRange,
}

/// Appends `pending` to the tree `range` in (stored_at, kind, id) order.
pub fn plan_round(mut range: CompactRange, mut pending: Vec<Pending>) -> Round {
    pending.sort_by(|a, b| (a.stored_at, a.kind, &a.id).cmp(&(b.stored_at, b.kind, &b.id)));
    let mut entries = Vec::with_capacity(pending.len());
    let mut hashes = Vec::with_capacity(pending.len() + pending.len() / 255 + 8);
    for p in pending {
        let index = range.size();
        range.append_with(leaf_hash(&p.entry), |level, i, h| {
            if level % TILE_HEIGHT == 0 {
                hashes.push((level, i, *h));
            }
        });
        entries.push(Sequenced {
            index,
            kind: p.kind,
            id: p.id,
            entry: p.entry,
        });
    }
    Round { entries, hashes, range }
}

/// Whether a checkpoint is to be signed for a tree of `size`, the latest signed one being
/// `latest`. A latest checkpoint larger than the tree means entries were removed: never sign
/// over that.
pub fn checkpoint_due(latest: Option<u64>, size: u64) -> Result<bool, String> {
    match latest {
        Some(l) if l > size => Err(format!(
            "the latest checkpoint covers {l} entries but the log holds {size}: entries were removed; no checkpoint is signed"
        )),
        Some(l) => Ok(l < size),
        None => Ok(true),
    }
}

/// The tiles `f` reads from the tree of `size` leaves. The stored hashes a proof (or a
/// compact range) reads depend only on the sizes and indexes, never on the hashes, so a run
/// over blank tiles finds them.
pub fn tiles_read_by<T>(size: u64, f: impl Fn(&dyn HashReader) -> Result<T, ProofError>) -> Vec<Tile> {
    let seen = RefCell::new(BTreeSet::new());
    let blank = TileHashReader::new(size, |t: Tile| {
        seen.borrow_mut().insert(t);
        Ok(vec![0u8; usize::from(t.width) * HASH_SIZE])
    });
    // The outcome over blank tiles means nothing; only what was read does.
    let _ = f(&blank);
    seen.into_inner().into_iter().collect()
}

/// Runs `f` over the tree of `size` leaves read from `tiles` (fetched for [`tiles_read_by`]).
pub fn run_on_tiles<T>(
    size: u64,
    tiles: &HashMap<Tile, Vec<u8>>,
    f: impl Fn(&dyn HashReader) -> Result<T, ProofError>,
) -> Result<T, ProofError> {
    let reader = TileHashReader::new(size, |t: Tile| tiles.get(&t).cloned().ok_or_else(|| "not stored".to_string()));
    f(&reader)
}

/// The range of hash indexes a tile covers at its tree level.
pub fn tile_span(t: Tile) -> (u64, u64) {
    let first = t.index * TILE_WIDTH;
    (first, first + u64::from(t.width))
}

/// A tile's content from the hashes read for its span (index, hash), or None when any is
/// missing (the tree is not that large yet).
pub fn tile_content(t: Tile, rows: &[(i64, Vec<u8>)]) -> Option<Vec<u8>> {
    let (first, end) = tile_span(t);
    if rows.len() as u64 != end - first {
        return None;
    }
    let mut out = Vec::with_capacity(rows.len() * HASH_SIZE);
    for (n, (idx, h)) in rows.iter().enumerate() {
        if u64::try_from(*idx).ok() != Some(first + n as u64) || h.len() != HASH_SIZE {
            return None;
        }
        out.extend_from_slice(h);
    }
    Some(out)
}

/// A log index or size as the databases keep it (BIGINT).
pub fn db_i64(v: u64) -> DbResult<i64> {
    i64::try_from(v).map_err(|_| DbError::Value(format!("log index {v} is beyond a BIGINT")))
}

pub fn db_u64(v: i64) -> DbResult<u64> {
    u64::try_from(v).map_err(|_| DbError::Value(format!("negative log index {v}")))
}

/// A pending row as read: (kind, id, stored_at, entry).
pub fn pending_row((kind, id, stored_at, entry): (i16, String, DateTime<Utc>, Vec<u8>)) -> Pending {
    Pending {
        kind,
        id,
        stored_at,
        entry,
    }
}

/// Entry rows as read, (item id, index, entry), by item id.
pub fn log_items(rows: Vec<(String, i64, Vec<u8>)>) -> DbResult<LogItems> {
    rows.into_iter().map(|(id, idx, entry)| Ok((id, (db_u64(idx)?, entry)))).collect()
}

/// A checkpoint row as read: (size, root, note).
pub fn checkpoint_row((size, root, note): (i64, Vec<u8>, String)) -> DbResult<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: db_u64(size)?,
        root: root
            .as_slice()
            .try_into()
            .map_err(|_| DbError::Value(format!("a checkpoint root of {} bytes", root.len())))?,
        note,
    })
}

/// One backend's transaction as a round sees it, the sequencer's lock already held.
#[allow(async_fn_in_trait)]
pub trait LogTx {
    /// Entries in the log.
    async fn size(&mut self) -> DbResult<u64>;
    /// Each complete tile among `tiles`.
    async fn tiles(&mut self, tiles: &[Tile]) -> DbResult<HashMap<Tile, Vec<u8>>>;
    /// At most `limit` committed pending entries, in (stored_at, kind, id) order.
    async fn pending(&mut self, limit: u32) -> DbResult<Vec<Pending>>;
    /// Stores the round's entries and hashes, and clears their pending rows.
    async fn append(&mut self, round: &Round) -> DbResult<()>;
    async fn latest_checkpoint(&mut self) -> DbResult<Option<u64>>;
    async fn keep_checkpoint(&mut self, cp: &StoredCheckpoint) -> DbResult<()>;
    /// The entries at indexes `first..first + count` that exist, in order.
    async fn entries(&mut self, first: u64, count: u64) -> DbResult<Vec<Vec<u8>>>;
    async fn index(&mut self, kind: Kind, id: String) -> DbResult<Option<u64>>;
    /// The checkpoint of `size`, or the latest.
    async fn checkpoint(&mut self, size: Option<u64>) -> DbResult<Option<StoredCheckpoint>>;
    /// When the oldest pending entry was stored, and when the newest checkpoint was signed.
    async fn lag(&mut self) -> DbResult<LogLag>;
}

/// The [`LogTx`] methods whose SQL reads the same on both backends (sqlx's SQLite driver takes
/// `$N` parameters too), for a connection type's `impl LogTx`.
macro_rules! shared_log_tx {
    () => {
        async fn size(&mut self) -> DbResult<u64> {
            let n: i64 = sqlx::query_scalar("SELECT coalesce(max(idx) + 1, 0) FROM tlog_entries")
                .fetch_one(&mut *self)
                .await?;
            tlog::db_u64(n)
        }

        async fn tiles(&mut self, tiles: &[Tile]) -> DbResult<HashMap<Tile, Vec<u8>>> {
            let mut out = HashMap::with_capacity(tiles.len());
            for t in tiles {
                let (first, end) = tlog::tile_span(*t);
                let rows: Vec<(i64, Vec<u8>)> =
                    sqlx::query_as("SELECT idx, hash FROM tlog_hashes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx")
                        .bind(i16::from(t.hash_level()))
                        .bind(tlog::db_i64(first)?)
                        .bind(tlog::db_i64(end)?)
                        .fetch_all(&mut *self)
                        .await?;
                if let Some(data) = tlog::tile_content(*t, &rows) {
                    out.insert(*t, data);
                }
            }
            Ok(out)
        }

        async fn lag(&mut self) -> DbResult<LogLag> {
            let oldest_pending: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(stored_at) FROM tlog_pending")
                .fetch_one(&mut *self)
                .await?;
            // The largest tree's checkpoint is the newest: read through the primary key.
            let newest_checkpoint: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT signed_at FROM tlog_checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(&mut *self)
                    .await?;
            Ok(LogLag {
                oldest_pending,
                newest_checkpoint,
            })
        }

        async fn latest_checkpoint(&mut self) -> DbResult<Option<u64>> {
            Ok(self.checkpoint(None).await?.map(|cp| cp.size))
        }

        async fn keep_checkpoint(&mut self, cp: &StoredCheckpoint) -> DbResult<()> {
            sqlx::query("INSERT INTO tlog_checkpoints (size, root, note) VALUES ($1, $2, $3)")
                .bind(tlog::db_i64(cp.size)?)
                .bind(cp.root.as_slice())
                .bind(&cp.note)
                .execute(&mut *self)
                .await?;
            Ok(())
        }

        async fn entries(&mut self, first: u64, count: u64) -> DbResult<Vec<Vec<u8>>> {
            Ok(
                sqlx::query_scalar("SELECT entry FROM tlog_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                    .bind(tlog::db_i64(first)?)
                    .bind(tlog::db_i64(first.saturating_add(count))?)
                    .fetch_all(&mut *self)
                    .await?,
            )
        }

        async fn index(&mut self, kind: Kind, id: String) -> DbResult<Option<u64>> {
            let idx: Option<i64> = sqlx::query_scalar("SELECT idx FROM tlog_entries WHERE kind = $1 AND item_id = $2")
                .bind(i16::from(kind.byte()))
                .bind(id)
                .fetch_optional(&mut *self)
                .await?;
            idx.map(tlog::db_u64).transpose()
        }

        async fn checkpoint(&mut self, size: Option<u64>) -> DbResult<Option<StoredCheckpoint>> {
            // The largest at or below `size` (any), then kept only if it is that size.
            let row: Option<(i64, Vec<u8>, String)> =
                sqlx::query_as("SELECT size, root, note FROM tlog_checkpoints WHERE size <= $1 ORDER BY size DESC LIMIT 1")
                    .bind(size.map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX)))
                    .fetch_optional(&mut *self)
                    .await?;
            let cp = row.map(tlog::checkpoint_row).transpose()?;
            Ok(cp.filter(|cp| size.is_none_or(|s| s == cp.size)))
        }
    };
}
pub(crate) use shared_log_tx;

/// The [`Store`] methods that read the log, for a backend whose `read` pool's connections
/// implement [`LogTx`].
macro_rules! shared_log_reads {
    () => {
        fn log_lag(&self) -> BoxFuture<'_, DbResult<LogLag>> {
            async move { LogTx::lag(&mut *self.read.acquire().await?).await }.boxed()
        }

        fn log_size(&self) -> BoxFuture<'_, DbResult<u64>> {
            async move { LogTx::size(&mut *self.read.acquire().await?).await }.boxed()
        }

        fn log_tiles(&self, tiles: Vec<Tile>) -> BoxFuture<'_, DbResult<HashMap<Tile, Vec<u8>>>> {
            async move { LogTx::tiles(&mut *self.read.acquire().await?, &tiles).await }.boxed()
        }

        fn log_entries(&self, first: u64, count: u64) -> BoxFuture<'_, DbResult<Vec<Vec<u8>>>> {
            async move { LogTx::entries(&mut *self.read.acquire().await?, first, count).await }.boxed()
        }

        fn log_checkpoint(&self, size: Option<u64>) -> BoxFuture<'_, DbResult<Option<StoredCheckpoint>>> {
            async move { LogTx::checkpoint(&mut *self.read.acquire().await?, size).await }.boxed()
        }

        fn log_index(&self, kind: Kind, id: String) -> BoxFuture<'_, DbResult<Option<u64>>> {
            async move { LogTx::index(&mut *self.read.acquire().await?, kind, id).await }.boxed()
        }
    };
}
pub(crate) use shared_log_reads;

/// `f` over the stored tiles of the tree of `size` (reads only the tiles it needs).
pub async fn over_tiles<T>(store: &dyn Store, size: u64, f: impl Fn(&dyn HashReader) -> Result<T, ProofError>) -> DbResult<T> {
    let tiles = store.log_tiles(tiles_read_by(size, &f)).await?;
    run_on_tiles(size, &tiles, &f).map_err(proof_error)
}

fn proof_error(e: ProofError) -> DbError {
    DbError::Value(format!("the stored log hashes are inconsistent: {e}"))
}

/// The compact range of the log's first `size` entries, from its stored tiles.
pub async fn range_at<T: LogTx>(tx: &mut T, size: u64) -> DbResult<CompactRange> {
    let read = |r: &dyn HashReader| CompactRange::from_reader(r, size);
    let tiles = tx.tiles(&tiles_read_by(size, read)).await?;
    run_on_tiles(size, &tiles, read).map_err(proof_error)
}

/// One sequencing round in `tx`: pending entries appended, and (with a key) a checkpoint of
/// the tree signed when the latest one does not cover it.
pub async fn round<T: LogTx>(tx: &mut T, signer: Option<&SignerKey>, limit: u32) -> DbResult<RoundReport> {
    let size = tx.size().await?;
    let range = range_at(tx, size).await?;
    let pending = tx.pending(limit).await?;
    let round = plan_round(range, pending);
    if !round.entries.is_empty() {
        tx.append(&round).await?;
    }
    let size = round.range.size();
    let mut signed = false;
    if let Some(key) = signer {
        if checkpoint_due(tx.latest_checkpoint().await?, size).map_err(DbError::Value)? {
            let root = round.range.root();
            let cp = Checkpoint {
                origin: key.verifier().name.clone(),
                size,
                root,
                extensions: vec![],
            };
            let note = cp.sign(key).map_err(|e| DbError::Value(e.to_string()))?;
            let note = String::from_utf8(note.to_bytes()).map_err(|e| DbError::Value(e.to_string()))?;
            tx.keep_checkpoint(&StoredCheckpoint { size, root, note }).await?;
            signed = true;
        }
    }
    Ok(RoundReport {
        sequenced: round.entries.len() as u64,
        size,
        signed,
    })
}

/// Starts a round every `every` until `shutdown` (a fixed rate: an item waits at most one
/// interval plus one round, however long rounds take); a full round is followed by the next at
/// once. Errors are logged and retried next time: the pending rows stay until a round succeeds.
pub fn spawn_sequencer(store: Arc<dyn Store>, signer: Option<Arc<SignerKey>>, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A round longer than the interval starts the next at once, then the rate resumes.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let full = match store.log_round(signer.clone(), MAX_PER_ROUND).await {
                Ok(Some(r)) => {
                    if r.sequenced > 0 || r.signed {
                        tracing::debug!(sequenced = r.sequenced, size = r.size, signed = r.signed, "log round");
                    }
                    r.sequenced >= u64::from(MAX_PER_ROUND)
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::error!(error = %e, "log sequencing round failed; pending entries stay queued");
                    false
                }
            };
            match store.log_lag().await {
                Ok(lag) => {
                    let (pending, checkpoint) = lag.ages(Utc::now());
                    super::metrics::LOG_OLDEST_PENDING_SECONDS.set(pending);
                    super::metrics::LOG_CHECKPOINT_AGE_SECONDS.set(checkpoint);
                }
                Err(e) => tracing::debug!(error = %e, "reading the log's lag failed"),
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::{consistency_proof, inclusion_proof, root_at, MemoryTree};
    use crate::evidence::tiles::tiles_for_size;

    fn pending(n: u64) -> Vec<Pending> {
        let t0: DateTime<Utc> = "2026-12-07T06:00:00Z".parse().unwrap();
        (0..n)
            .map(|i| {
                let kind = [Kind::Record, Kind::Amendment, Kind::BreakGlass][(i % 3) as usize];
                // Several items share a time: the kind and id order them.
                let at = t0 + chrono::Duration::microseconds((i / 4) as i64);
                Pending::new(kind, &format!("item-{i:05}"), Some("uid"), at, [i as u8; 32]).unwrap()
            })
            .collect()
    }

    /// Tiles of a tree built from the stored hashes a sequence of rounds wrote.
    fn stored_tiles(hashes: &[(u8, u64, Hash)], size: u64) -> HashMap<Tile, Vec<u8>> {
        let by: HashMap<(u8, u64), Hash> = hashes.iter().map(|(l, i, h)| ((*l, *i), *h)).collect();
        tiles_for_size(size)
            .into_iter()
            .map(|t| {
                let (first, end) = tile_span(t);
                let data = (first..end).flat_map(|i| by[&(t.hash_level(), i)]).collect();
                (t, data)
            })
            .collect()
    }

    #[test]
    fn rounds_append_in_order_and_store_only_tile_levels() {
        let all = pending(70_000);
        let mut want = all.clone();
        want.sort_by(|a, b| (a.stored_at, a.kind, &a.id).cmp(&(b.stored_at, b.kind, &b.id)));
        let reference: MemoryTree = want.iter().map(|p| leaf_hash(&p.entry)).collect();

        let mut hashes = vec![];
        let mut range = CompactRange::new();
        let mut entries = vec![];
        // Rounds of uneven sizes, each resuming from the stored tiles alone.
        for chunk in want.chunks(6_571) {
            let size = range.size();
            let tiles = stored_tiles(&hashes, size);
            let resumed = run_on_tiles(size, &tiles, |r| CompactRange::from_reader(r, size)).unwrap();
            assert_eq!(resumed, range);
            let mut shuffled = chunk.to_vec();
            shuffled.reverse();
            let r = plan_round(resumed, shuffled);
            assert!(r.hashes.iter().all(|(l, _, _)| l % 8 == 0));
            hashes.extend(r.hashes);
            entries.extend(r.entries);
            range = r.range;
        }
        assert_eq!(range.root(), reference.root());
        let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, (0..70_000).collect::<Vec<_>>());
        assert!(entries.iter().zip(&want).all(|(e, p)| e.id == p.id && e.entry == p.entry));
        // Two leaves per 256 at most beyond the leaves themselves.
        assert!(hashes.len() < 70_000 + 300, "{}", hashes.len());

        // Proofs computed from the fetched tiles equal the reference's.
        let size = 70_000;
        let tiles = stored_tiles(&hashes, size);
        for (index, at) in [(0, size), (69_999, size), (12_345, 40_000)] {
            let f = |r: &dyn HashReader| inclusion_proof(r, index, at);
            let needed = tiles_read_by(size, f);
            let fetched: HashMap<Tile, Vec<u8>> = needed.iter().map(|t| (*t, tiles[t].clone())).collect();
            assert_eq!(
                run_on_tiles(size, &fetched, f).unwrap(),
                inclusion_proof(&reference, index, at).unwrap()
            );
        }
        let f = |r: &dyn HashReader| consistency_proof(r, 30_001, size);
        let fetched: HashMap<Tile, Vec<u8>> = tiles_read_by(size, f).iter().map(|t| (*t, tiles[t].clone())).collect();
        assert_eq!(
            run_on_tiles(size, &fetched, f).unwrap(),
            consistency_proof(&reference, 30_001, size).unwrap()
        );
        let f = |r: &dyn HashReader| root_at(r, 33_333);
        let fetched: HashMap<Tile, Vec<u8>> = tiles_read_by(size, f).iter().map(|t| (*t, tiles[t].clone())).collect();
        assert_eq!(run_on_tiles(size, &fetched, f).unwrap(), root_at(&reference, 33_333).unwrap());
        // A tile missing from what was fetched is an error, not a wrong proof.
        assert!(run_on_tiles(size, &HashMap::new(), |r| inclusion_proof(r, 5, size)).is_err());
    }

    #[test]
    fn the_log_is_stale_only_while_entries_wait() {
        let now: DateTime<Utc> = "2026-12-07T06:00:10Z".parse().unwrap();
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        assert_eq!(LogLag::default().ages(now), (0, 0));
        let idle = LogLag {
            oldest_pending: None,
            newest_checkpoint: at("2026-12-07T05:00:00Z"),
        };
        assert_eq!(idle.ages(now), (0, 0), "nothing to sign");
        let stuck = LogLag {
            oldest_pending: at("2026-12-07T06:00:00Z"),
            newest_checkpoint: at("2026-12-07T05:59:00Z"),
        };
        assert_eq!(stuck.ages(now), (10, 70));
        let never = LogLag {
            oldest_pending: at("2026-12-07T06:00:20Z"),
            newest_checkpoint: None,
        };
        assert_eq!(never.ages(now), (0, 0), "clock skew counts as fresh");
    }

    #[test]
    fn checkpoints_are_due_when_the_tree_grew() {
        assert_eq!(checkpoint_due(None, 0), Ok(true));
        assert_eq!(checkpoint_due(Some(5), 5), Ok(false));
        assert_eq!(checkpoint_due(Some(5), 9), Ok(true));
        assert!(checkpoint_due(Some(9), 5).unwrap_err().contains("removed"));
    }

    #[test]
    fn tile_content_needs_every_hash_in_order() {
        let t = Tile {
            level: 0,
            index: 1,
            width: 2,
        };
        let h = |b: u8| vec![b; 32];
        assert_eq!(tile_content(t, &[(256, h(1)), (257, h(2))]).unwrap().len(), 64);
        assert_eq!(tile_content(t, &[(256, h(1))]), None);
        assert_eq!(tile_content(t, &[(256, h(1)), (258, h(2))]), None);
        assert_eq!(tile_content(t, &[(256, h(1)), (257, vec![2; 31])]), None);
    }

    #[test]
    fn entries_that_cannot_be_encoded_are_refused() {
        let at = Utc::now();
        assert!(Pending::new(Kind::Record, "", None, at, [0; 32]).is_err());
        let p = Pending::new(Kind::BreakGlass, "bg-7", None, at, [0; 32]).unwrap();
        assert_eq!(p.kind, 3);
        assert_eq!(Entry::decode(&p.entry).unwrap().cr_uid, "");
    }
}
