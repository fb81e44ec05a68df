//! A batch of state writes applied at once (see [`super::StateStore::write`]).
//!
//! Operators build their writes here rather than on RocksDB's own batch type, so the storage
//! engine stays an implementation detail of `state/`.

/// Puts and deletes collected to be applied together, in order.
#[derive(Default)]
pub struct StateBatch {
    inner: rocksdb::WriteBatch,
}

impl StateBatch {
    pub fn new() -> Self {
        StateBatch::default()
    }

    /// Sets `key` to `value` (last write to a key in the batch wins).
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.put(key, value);
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.inner.delete(key);
    }

    /// Number of writes collected.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub(super) fn into_inner(self) -> rocksdb::WriteBatch {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn a_batch_applies_puts_and_deletes_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_fresh(&dir.path().join("s")).expect("open");
        store.put(b"gone", b"v").expect("put");
        let mut batch = StateBatch::new();
        assert!(batch.is_empty());
        batch.put(b"k", b"1");
        batch.put(b"k", b"2");
        batch.delete(b"gone");
        assert_eq!(batch.len(), 3);
        store.write(batch).expect("write");
        assert_eq!(store.get(b"k").expect("get"), Some(b"2".to_vec()));
        assert_eq!(store.get(b"gone").expect("get"), None);
    }
}
