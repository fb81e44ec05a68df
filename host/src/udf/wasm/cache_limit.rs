//! Keeps the compiled-module cache bounded: every uploaded version and every Wasmtime upgrade
//! adds a file, and nothing else would ever remove one.
//!
//! After a module is compiled and stored, the cache is trimmed to its size limit
//! (`HEADWATER_WASM_CACHE_MAX`, a size like `2GiB`; default 1 GiB) by deleting the files used
//! least recently (a load touches its file); the file just written always stays. Files a
//! crashed writer left half-written (`*.partial`) go once they are an hour old.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Default size limit of the compiled-module cache.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// How old a `.partial` file must be before it is taken for a crashed writer's.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// The cache's size limit: `HEADWATER_WASM_CACHE_MAX`, else [`DEFAULT_MAX_BYTES`].
pub fn max_bytes() -> u64 {
    std::env::var("HEADWATER_WASM_CACHE_MAX")
        .ok()
        .and_then(|v| crate::config::parse_byte_size(&v))
        .map(|n| n as u64)
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// Marks a cached file as just used (its modification time), so trimming keeps it longest.
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Deletes the least recently used compiled modules in `dir` until the rest fit in
/// `max_bytes`, never `keep`; and `.partial` files older than an hour. Returns how many
/// files it deleted. Errors are ignored: a cache that cannot be trimmed still works.
pub fn trim(dir: &Path, max_bytes: u64, keep: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut deleted = 0;
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".partial") {
            let old = now.duration_since(used).unwrap_or_default() >= STALE_PARTIAL;
            if old && std::fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
            continue;
        }
        if name.ends_with(".cwasm") {
            files.push((used, meta.len(), path));
        }
    }
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    files.sort();
    for (_, size, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), "removed a compiled Wasm module from the cache (least recently used)");
            total -= size;
            deleted += 1;
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, size: usize, age_s: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).expect("write");
        let f = std::fs::File::options()
            .append(true)
            .open(&path)
            .expect("open");
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .expect("mtime");
        path
    }

    #[test]
    fn the_least_recently_used_modules_go_until_the_rest_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let oldest = file(d, "a-1.cwasm", 400, 300);
        let old = file(d, "b-1.cwasm", 400, 200);
        let recent = file(d, "c-1.cwasm", 400, 100);
        let new = file(d, "d-1.cwasm", 400, 0);
        let other = file(d, "notes.txt", 5000, 1000);
        let fresh_partial = file(d, "e-1.cwasm.77.partial", 10, 10);
        let stale_partial = file(d, "f-1.cwasm.78.partial", 10, 7200);
        // `oldest` was just loaded again: it is the most recently used now.
        touch(&oldest);
        assert_eq!(trim(d, 900, &new), 3);
        assert!(!old.exists() && !recent.exists() && !stale_partial.exists());
        assert!(oldest.exists() && new.exists() && fresh_partial.exists() && other.exists());
    }

    #[test]
    fn the_file_just_written_stays_even_alone_over_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let older = file(d, "a-1.cwasm", 400, 100);
        let big = file(d, "b-1.cwasm", 4000, 0);
        assert_eq!(trim(d, 1000, &big), 1);
        assert!(big.exists() && !older.exists());
        assert_eq!(trim(&d.join("missing"), 1, &big), 0);
    }
}
