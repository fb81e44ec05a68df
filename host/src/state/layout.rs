//! The state key layout: the one place that knows how a state key is built and read back.
//!
//! Every key starts with the same five bytes, so one key group's state is one contiguous
//! range across all operators (the unit of rescaling) and one operator's entries of one kind
//! are a contiguous range inside it:
//!
//! ```text
//! key group (u16, big-endian) | operator id (u16, big-endian) | tag (u8) | ...
//! ```
//!
//! What follows depends on the [`Tag`]:
//! - *per-key* tags: `key_len (u32, big-endian) | key | suffix`, the key being the record key's
//!   JSON bytes. `kg | op | tag | key_len | key` is the key's prefix, which the store's bloom
//!   filters index, so a point lookup or a scan of one key's entries skips files without it.
//! - *time-ordered* tags: `time (8 bytes, order-preserving) | key`, so a scan of the tag's
//!   range reads entries by time. Their bloom prefix is `kg | op | tag`.
//!
//! Times in keys are [`encode_time`]d: big-endian with the sign bit flipped, so byte order is
//! time order, negative times included.
//!
//! The byte values below are on disk in every checkpoint: changing one, or the shape of a
//! key, makes older checkpoints unreadable. The `encoded_keys_are_pinned` test guards them.

use super::{KeyGroup, Millis};

/// Length of the head every state key starts with: key group, operator id, tag.
pub const HEAD_LEN: usize = 5;
/// Offset of the tag byte in a state key.
const TAG_AT: usize = 4;
/// Length of the head of a per-key entry: the common head and the key's length.
const KEYED_HEAD_LEN: usize = HEAD_LEN + 4;
/// Length of an encoded time.
const TIME_LEN: usize = 8;

/// The kinds of state entries, one tag byte each. The values are on disk: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// A window's accumulators. Per key; the suffix is the window (`start | end`, both
    /// encoded times) for tumbling and sliding windows, the session's start for sessions
    /// (whose end lives in the value, so extending a session rewrites one value).
    WindowAccumulator = 1,
    /// A `count_distinct` member seen in a window. Per key; the suffix is the window's
    /// accumulator suffix, then the aggregate's index (u8), then the member's JSON bytes.
    /// The value is empty.
    WindowMember = 2,
    /// The state a keyed process function returned for a key. Per key, no suffix.
    KeyedState = 3,
    /// A keyed process timer. Time-ordered: `time | key`, the value is empty.
    KeyedTimer = 4,
}

impl Tag {
    /// Every tag, in byte order.
    pub const ALL: [Tag; 4] = [
        Tag::WindowAccumulator,
        Tag::WindowMember,
        Tag::KeyedState,
        Tag::KeyedTimer,
    ];

    /// The tag's byte in a state key.
    pub const fn byte(self) -> u8 {
        self as u8
    }

    pub fn from_byte(byte: u8) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| t.byte() == byte)
    }

    /// True for tags whose entries are ordered by time (the time comes before the key).
    pub const fn is_time_ordered(self) -> bool {
        matches!(self, Tag::KeyedTimer)
    }
}

/// A time as it is stored in keys: 8 bytes whose byte order is the times' order.
pub fn encode_time(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// Reads back an [`encode_time`]d time; `None` unless `b` is exactly 8 bytes.
pub fn decode_time(b: &[u8]) -> Option<Millis> {
    let arr: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as Millis)
}

/// The prefix of every entry of one kind (`tag`) an operator keeps in a key group.
pub fn tag_prefix(kg: KeyGroup, op: u16, tag: Tag) -> Vec<u8> {
    let mut k = Vec::with_capacity(HEAD_LEN);
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&op.to_be_bytes());
    k.push(tag.byte());
    k
}

/// The prefix of every entry of one kind an operator keeps for one key (a per-key tag).
pub fn key_prefix(kg: KeyGroup, op: u16, tag: Tag, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEYED_HEAD_LEN + key.len() + 2 * TIME_LEN);
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&op.to_be_bytes());
    k.push(tag.byte());
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Splits a per-key entry's key into the user key and what follows it.
pub fn split_keyed(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(k.get(HEAD_LEN..KEYED_HEAD_LEN)?.try_into().ok()?) as usize;
    let end = KEYED_HEAD_LEN.checked_add(len)?;
    Some((k.get(KEYED_HEAD_LEN..end)?, k.get(end..)?))
}

/// The same entry under another tag (a window's member entries share its accumulator's key).
pub fn retag(k: &[u8], tag: Tag) -> Vec<u8> {
    let mut out = k.to_vec();
    if let Some(b) = out.get_mut(TAG_AT) {
        *b = tag.byte();
    }
    out
}

/// A tumbling or sliding window's accumulator key.
pub fn window_key(kg: KeyGroup, op: u16, key: &[u8], start: Millis, end: Millis) -> Vec<u8> {
    let mut k = key_prefix(kg, op, Tag::WindowAccumulator, key);
    k.extend_from_slice(&encode_time(start));
    k.extend_from_slice(&encode_time(end));
    k
}

/// Splits a [`window_key`] into the user key, the window's start and its end.
pub fn parse_window_key(k: &[u8]) -> Option<(&[u8], Millis, Millis)> {
    let (key, rest) = split_keyed(k)?;
    if rest.len() != 2 * TIME_LEN {
        return None;
    }
    Some((
        key,
        decode_time(&rest[..TIME_LEN])?,
        decode_time(&rest[TIME_LEN..])?,
    ))
}

/// A session's accumulator key: the session's start only (its end is in the value).
pub fn session_key(kg: KeyGroup, op: u16, key: &[u8], start: Millis) -> Vec<u8> {
    let mut k = key_prefix(kg, op, Tag::WindowAccumulator, key);
    k.extend_from_slice(&encode_time(start));
    k
}

/// Splits a [`session_key`] into the user key and the session's start.
pub fn parse_session_key(k: &[u8]) -> Option<(&[u8], Millis)> {
    let (key, rest) = split_keyed(k)?;
    Some((key, decode_time(rest)?))
}

/// The prefix of every `count_distinct` member of a window (all its aggregates).
pub fn members_prefix(window_key: &[u8]) -> Vec<u8> {
    retag(window_key, Tag::WindowMember)
}

/// The prefix of the members of aggregate `agg` of a window.
pub fn member_prefix(window_key: &[u8], agg: u8) -> Vec<u8> {
    let mut k = members_prefix(window_key);
    k.push(agg);
    k
}

/// The key recording that `member` (its JSON bytes) was seen by aggregate `agg` of a window.
pub fn member_key(window_key: &[u8], agg: u8, member: &[u8]) -> Vec<u8> {
    let mut k = member_prefix(window_key, agg);
    k.extend_from_slice(member);
    k
}

/// The key of a keyed process function's state for `key`.
pub fn keyed_state_key(kg: KeyGroup, op: u16, key: &[u8]) -> Vec<u8> {
    key_prefix(kg, op, Tag::KeyedState, key)
}

/// The key of a keyed process timer for `key` at `time`.
pub fn timer_key(kg: KeyGroup, op: u16, time: Millis, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(HEAD_LEN + TIME_LEN + key.len());
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&op.to_be_bytes());
    k.push(Tag::KeyedTimer.byte());
    k.extend_from_slice(&encode_time(time));
    k.extend_from_slice(key);
    k
}

/// Splits a [`timer_key`] into its time and the user key.
pub fn parse_timer_key(k: &[u8]) -> Option<(Millis, &[u8])> {
    let time = decode_time(k.get(HEAD_LEN..HEAD_LEN + TIME_LEN)?)?;
    Some((time, k.get(HEAD_LEN + TIME_LEN..)?))
}

/// The key group a state key belongs to.
pub fn key_group_of_key(k: &[u8]) -> Option<KeyGroup> {
    Some(u16::from_be_bytes(k.get(..2)?.try_into().ok()?))
}

/// The first key of key group `kg`'s range.
pub fn key_group_start(kg: KeyGroup) -> [u8; 2] {
    kg.to_be_bytes()
}

/// Length of the part of a state key the store's bloom filters index (see the module docs):
/// `None` when `k` is too short to tell. A key whose tag is not time-ordered (unknown tags
/// included) is read as a per-key entry, as it always was.
pub fn bloom_prefix_len(k: &[u8]) -> Option<usize> {
    let tag = *k.get(TAG_AT)?;
    if Tag::from_byte(tag).is_some_and(Tag::is_time_ordered) {
        return Some(HEAD_LEN);
    }
    let len = u32::from_be_bytes(k.get(HEAD_LEN..KEYED_HEAD_LEN)?.try_into().ok()?) as usize;
    Some(KEYED_HEAD_LEN + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of every key kind, as older checkpoints hold them. If this test fails, the
    /// on-disk format changed: restoring existing checkpoints would misread their state.
    #[test]
    fn encoded_keys_are_pinned() {
        let key = br#""k""#;
        assert_eq!(
            Tag::ALL.map(Tag::byte),
            [1, 2, 3, 4],
            "tag bytes are on disk"
        );
        assert_eq!(
            tag_prefix(0x0102, 0x0304, Tag::KeyedTimer),
            [0x01, 0x02, 0x03, 0x04, 0x04]
        );
        let w = window_key(3, 1, key, -5, 5);
        assert_eq!(
            w,
            [
                &[0, 3, 0, 1, 1, 0, 0, 0, 3][..],
                br#""k""#,
                &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb],
                &[0x80, 0, 0, 0, 0, 0, 0, 5],
            ]
            .concat()
        );
        assert_eq!(
            session_key(3, 1, key, 7),
            [
                &[0, 3, 0, 1, 1, 0, 0, 0, 3][..],
                br#""k""#,
                &[0x80, 0, 0, 0, 0, 0, 0, 7],
            ]
            .concat()
        );
        assert_eq!(
            member_key(&w, 2, br#""u""#),
            [
                &[0, 3, 0, 1, 2, 0, 0, 0, 3][..],
                br#""k""#,
                &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb],
                &[0x80, 0, 0, 0, 0, 0, 0, 5],
                &[2],
                br#""u""#,
            ]
            .concat()
        );
        assert_eq!(
            keyed_state_key(300, 2, key),
            [&[0x01, 0x2c, 0, 2, 3, 0, 0, 0, 3][..], br#""k""#].concat()
        );
        assert_eq!(
            timer_key(300, 2, 11, key),
            [
                &[0x01, 0x2c, 0, 2, 4][..],
                &[0x80, 0, 0, 0, 0, 0, 0, 11],
                br#""k""#,
            ]
            .concat()
        );
    }

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let key = br#""k""#;
        let a = window_key(3, 1, key, -5, 5);
        let b = window_key(3, 1, key, 2, 12);
        assert!(a < b);
        assert_eq!(parse_window_key(&a), Some((&key[..], -5, 5)));
        assert_eq!(
            parse_session_key(&session_key(3, 1, key, -9)),
            Some((&key[..], -9))
        );
        let t = timer_key(9, 1, -3, key);
        assert_eq!(parse_timer_key(&t), Some((-3, &key[..])));
        assert!(timer_key(9, 1, -3, key) < timer_key(9, 1, 2, b"\"a\""));
        assert_eq!(key_group_of_key(&t), Some(9));
        assert_eq!(parse_window_key(&session_key(3, 1, key, 1)), None);
        assert_eq!(split_keyed(&[0, 1, 0, 1, 1, 0, 0, 0, 9, b'x']), None);
    }

    #[test]
    fn bloom_prefixes_cover_the_key_or_the_tag() {
        let key = br#""k""#;
        let w = window_key(3, 1, key, 0, 10);
        assert_eq!(bloom_prefix_len(&w), Some(9 + key.len()));
        assert_eq!(
            bloom_prefix_len(&member_key(&w, 0, b"1")),
            Some(9 + key.len())
        );
        assert_eq!(bloom_prefix_len(&timer_key(3, 1, 5, key)), Some(5));
        assert_eq!(bloom_prefix_len(&[0, 3, 0, 1]), None);
        assert_eq!(bloom_prefix_len(&[0, 3, 0, 1, 1, 0]), None);
    }
}
