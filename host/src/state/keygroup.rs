//! Keys hash into a fixed number of key groups (`max_parallelism`); each task owns a
//! contiguous range of them (the same assignment as Apache Flink's).

use xxhash_rust::xxh3::xxh3_64;

/// Index of a key group, `0..max_parallelism`.
pub type KeyGroup = u16;

/// The key group of an encoded key. Stable across runs and machines.
pub fn key_group_of(key_bytes: &[u8], max_parallelism: u32) -> KeyGroup {
    (xxh3_64(key_bytes) % u64::from(max_parallelism.max(1))) as KeyGroup
}

/// The task (0-based) that owns a key group when the pipeline runs with `parallelism` tasks.
pub fn task_of_key_group(kg: KeyGroup, max_parallelism: u32, parallelism: usize) -> usize {
    (usize::from(kg) * parallelism) / max_parallelism.max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_owns_a_contiguous_nonempty_range() {
        for (max, par) in [(128u32, 1usize), (128, 2), (128, 3), (128, 128), (7, 3)] {
            let owners: Vec<usize> = (0..max)
                .map(|kg| task_of_key_group(kg as KeyGroup, max, par))
                .collect();
            assert!(
                owners.windows(2).all(|w| w[0] <= w[1]),
                "ranges are contiguous"
            );
            for task in 0..par {
                assert!(
                    owners.contains(&task),
                    "task {task} of {par} owns a key group"
                );
            }
            assert_eq!(owners.last().copied(), Some(par - 1));
        }
    }

    #[test]
    fn key_groups_are_stable_and_in_range() {
        let a = key_group_of(b"\"user-1\"", 128);
        assert_eq!(a, key_group_of(b"\"user-1\"", 128));
        assert!(a < 128);
        let spread: std::collections::HashSet<_> = (0..1000)
            .map(|i| key_group_of(format!("k{i}").as_bytes(), 128))
            .collect();
        assert!(
            spread.len() > 100,
            "keys spread over key groups: {}",
            spread.len()
        );
    }
}
