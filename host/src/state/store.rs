//! The RocksDB-backed state store shared by a run's tasks. Each task touches only the key
//! groups it owns, so tasks never contend on the same keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, Direction, IteratorMode, Options, SliceTransform, DB};

use super::layout;
use super::StateBatch;

/// The former name of [`StateBatch`], kept for code outside the host crate (the checkpoint
/// benchmark) that batches its writes.
pub type WriteBatch = StateBatch;

/// A failure of the local state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state store in `{path}`: {source}; check that the folder is writable and not used by another run")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("cannot clear old state in `{path}`: {source}")]
    Clear {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state is corrupt: {0}; delete the state folder and rerun")]
    Corrupt(String),
    #[error(
        "state store read/write failed: {0}; the disk may be full or the state folder damaged"
    )]
    Io(#[from] rocksdb::Error),
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A cheap-to-clone handle on the run's RocksDB instance.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<DB>,
    path: PathBuf,
}

impl StateStore {
    /// Opens a fresh, empty store in `dir`, removing whatever was there.
    pub fn open_fresh(dir: &Path) -> Result<StateStore, StateError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|source| StateError::Clear {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Self::open(dir)
    }

    /// Opens the store in `dir` as it is (a restored checkpoint), creating it if missing.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Clear {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_write_buffer_size(64 << 20);
        // Checkpoints flush memtables, so reads soon go to SST files: a prefix bloom filter
        // (one prefix per key of an operator) lets a lookup skip files without the key, and
        // a block cache keeps hot blocks decoded.
        opts.set_prefix_extractor(SliceTransform::create(
            "headwater.key.v1",
            key_prefix,
            Some(key_prefix_in_domain),
        ));
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        table.set_block_cache(&Cache::new_lru_cache(64 << 20));
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        opts.set_block_based_table_factory(&table);
        // Small upper levels stay uncompressed: reads right after a checkpoint's flush hit
        // them most, and decompressing a block per lookup costs more than the disk saved.
        opts.set_compression_per_level(&[
            rocksdb::DBCompressionType::None,
            rocksdb::DBCompressionType::None,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
        ]);
        opts.set_memtable_prefix_bloom_ratio(0.1);
        let db = DB::open(&opts, dir).map_err(|source| StateError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateStore {
            db: Arc::new(db),
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get(key)?)
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        Ok(self.db.put_opt(key, value, &opts)?)
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), StateError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        Ok(self.db.delete_opt(key, &opts)?)
    }

    /// Applies many writes at once. The WAL is off: durability comes from checkpoints.
    pub fn write(&self, batch: StateBatch) -> Result<(), StateError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        Ok(self.db.write_opt(batch.into_inner(), &opts)?)
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StateError> {
        let mut out = Vec::new();
        let mut opts = rocksdb::ReadOptions::default();
        if !key_prefix_in_domain(prefix) {
            // Shorter than one key's prefix (a whole key group, say): the bloom filters and
            // prefix seek cannot serve it.
            opts.set_total_order_seek(true);
        }
        // Bound the iterator so it never walks past the prefix (or over tombstones beyond it).
        if let Some(upper) = prefix_successor(prefix) {
            opts.set_iterate_upper_bound(upper);
        }
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(prefix, Direction::Forward), opts);
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Calls `f` with every entry whose key starts with `prefix`, in key order, without
    /// collecting them: for scans over a whole state (restoring timer indexes), where the
    /// entries are read once and need not stay in the block cache.
    pub fn for_each_in_prefix(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut opts = rocksdb::ReadOptions::default();
        if !key_prefix_in_domain(prefix) {
            opts.set_total_order_seek(true);
        }
        if let Some(upper) = prefix_successor(prefix) {
            opts.set_iterate_upper_bound(upper);
        }
        // A one-pass scan: do not evict the working set from the cache, read ahead.
        opts.fill_cache(false);
        opts.set_readahead_size(2 << 20);
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(prefix);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) {
                break;
            }
            f(k, v)?;
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Writes a consistent copy of the store into `dir` (which must not exist): memtables are
    /// flushed, SST files are hard-linked (cheap), the small metadata files copied.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<(), StateError> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        cp.create_checkpoint(dir)?;
        Ok(())
    }

    /// Copies every entry whose key group is in `first..=last` from `other` (rescaling).
    pub fn copy_key_groups(
        &self,
        other: &StateStore,
        first: u16,
        last: u16,
    ) -> Result<u64, StateError> {
        let mut copied = 0u64;
        let mut batch = StateBatch::new();
        let mut opts = rocksdb::ReadOptions::default();
        // A range of whole key groups spans many keys' prefixes: iterate in total order, not
        // in prefix mode (where moving past one key's prefix is undefined).
        opts.set_total_order_seek(true);
        if let Some(next) = last.checked_add(1) {
            opts.set_iterate_upper_bound(layout::key_group_start(next).to_vec());
        }
        let start = layout::key_group_start(first);
        let iter = other
            .db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
        for item in iter {
            let (k, v) = item?;
            match layout::key_group_of_key(&k) {
                Some(kg) if kg >= first && kg <= last => {}
                Some(kg) if kg > last => break,
                _ => continue,
            }
            batch.put(&k, &v);
            copied += 1;
            if batch.len() >= 10_000 {
                self.write(std::mem::take(&mut batch))?;
            }
        }
        self.write(batch)?;
        Ok(copied)
    }
}

/// The part of a state key the bloom filters index (see [`layout::bloom_prefix_len`]): one
/// key's prefix for per-key state, the tag's for time-ordered entries.
fn key_prefix(k: &[u8]) -> &[u8] {
    let end = layout::bloom_prefix_len(k).unwrap_or(k.len());
    &k[..end.min(k.len())]
}

fn key_prefix_in_domain(k: &[u8]) -> bool {
    layout::bloom_prefix_len(k).is_some_and(|end| end <= k.len())
}

/// The smallest key greater than every key starting with `prefix` (None if there is none).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_scan_returns_only_matching_keys_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_fresh(&dir.path().join("s")).expect("open");
        for k in [&b"a\x01b"[..], b"a\x01a", b"a\x02", b"b"] {
            store.put(k, b"v").expect("put");
        }
        let keys: Vec<_> = store
            .scan_prefix(b"a\x01")
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a\x01a".to_vec(), b"a\x01b".to_vec()]);
        store.delete(b"a\x01a").expect("delete");
        assert_eq!(store.get(b"a\x01a").expect("get"), None);
    }

    /// A state key as operators write them: key group, operator, tag, length-prefixed key.
    fn state_key(kg: u16, key: &str) -> Vec<u8> {
        layout::key_prefix(kg, 1, layout::Tag::WindowAccumulator, key.as_bytes())
    }

    #[test]
    fn copying_key_groups_finds_every_key_in_flushed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = StateStore::open_fresh(&dir.path().join("from")).expect("open");
        for kg in 0..128u16 {
            for i in 0..20 {
                from.put(&state_key(kg, &format!("k{kg}-{i}")), b"v")
                    .expect("put");
            }
        }
        // A checkpoint flushes the memtable: the keys now live in SST files with filters.
        from.checkpoint_to(&dir.path().join("cp"))
            .expect("checkpoint");
        let to = StateStore::open_fresh(&dir.path().join("to")).expect("open");
        let copied = to.copy_key_groups(&from, 32, 63).expect("copy");
        assert_eq!(copied, 32 * 20);
        assert!(to.get(&state_key(40, "k40-7")).expect("get").is_some());
        assert!(to.get(&state_key(64, "k64-0")).expect("get").is_none());
        // Scans of one key's prefix and of a whole key group both see flushed keys.
        assert_eq!(
            from.scan_prefix(&state_key(5, "k5-3")).expect("scan").len(),
            1
        );
        let group = layout::tag_prefix(7, 1, layout::Tag::WindowAccumulator);
        assert_eq!(from.scan_prefix(&group).expect("scan").len(), 20);
    }

    #[test]
    fn prefix_successor_handles_max_bytes() {
        assert_eq!(prefix_successor(b"a\x01"), Some(b"a\x02".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn open_fresh_discards_earlier_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        {
            let store = StateStore::open_fresh(&path).expect("open");
            store.put(b"k", b"v").expect("put");
        }
        let store = StateStore::open_fresh(&path).expect("reopen");
        assert_eq!(store.get(b"k").expect("get"), None);
    }
}
