//! Serde adapters that bound what decoding a field may allocate.
//!
//! They are codec-independent (plain serde), but they exist for the
//! codec's sake: a length prefix read from the wire is a claim, not a
//! fact, so nothing here reserves memory for more than a small number of
//! elements before the elements have actually been decoded, and counted
//! collections stop at their limit instead of growing to whatever the
//! peer declared.

use crate::{
    Bucket, Change, Chunk, Digest, Seq, MAX_BUCKETS, MAX_CAPABILITIES, MAX_CHANGES_PER_PAGE,
    MAX_CHUNK_LIST, MAX_RANGES, MAX_VERIFY_ENTRIES,
};
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Elements reserved up front, whatever the declared length: the rest
/// grows as elements really arrive.
const PREALLOC: usize = 256;

/// A sequence of at most `max` elements.
struct Bounded<T> {
    max: usize,
    what: &'static str,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        // Refuse an over-long declaration before decoding any element.
        if hint > self.max {
            return Err(A::Error::custom(format_args!(
                "{hint} {} exceed the limit of {}",
                self.what, self.max
            )));
        }
        let mut v = Vec::with_capacity(hint.min(PREALLOC));
        while let Some(x) = seq.next_element()? {
            // A format without a length prefix gives no hint: count.
            if v.len() == self.max {
                return Err(A::Error::custom(format_args!(
                    "more than {} {}",
                    self.max, self.what
                )));
            }
            v.push(x);
        }
        Ok(v)
    }
}

fn bounded<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(Bounded {
        max,
        what,
        _t: PhantomData,
    })
}

/// A page's changes: at most [`MAX_CHANGES_PER_PAGE`].
pub(crate) fn changes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Seq, Change)>, D::Error> {
    bounded(d, MAX_CHANGES_PER_PAGE, "changes in a page")
}

/// A page of a chunk list: at most [`MAX_CHUNK_LIST`].
pub(crate) fn chunk_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Chunk>, D::Error> {
    bounded(d, MAX_CHUNK_LIST, "chunks in a list")
}

/// A page of a compact chunk list: at most [`MAX_CHUNK_LIST`].
pub(crate) fn digests<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
    bounded(d, MAX_CHUNK_LIST, "chunks in a list")
}

/// A summary's buckets: at most [`MAX_BUCKETS`].
pub(crate) fn buckets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bucket>, D::Error> {
    bounded(d, MAX_BUCKETS, "buckets in a summary")
}

/// A page of entries for `verify`: at most [`MAX_VERIFY_ENTRIES`].
pub(crate) fn entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Change>, D::Error> {
    bounded(d, MAX_VERIFY_ENTRIES, "entries in a page")
}

/// A range request's ranges: at most [`MAX_RANGES`].
pub(crate) fn ranges<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, u64)>, D::Error> {
    bounded(d, MAX_RANGES, "ranges")
}

/// A Hello's capabilities: at most [`MAX_CAPABILITIES`] names.
pub(crate) fn capabilities<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names: Vec<Text> = bounded(d, MAX_CAPABILITIES, "capabilities")?;
    Ok(names.into_iter().map(|t| t.0).collect())
}

/// A string, read as a borrowed `str` where the format can: the codec
/// then checks that all its bytes are present before anything is
/// allocated, instead of reserving the declared length first.
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(TextVisitor)
}

struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        text(d).map(Text)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a UTF-8 string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<String, E> {
        Ok(s.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<String, E> {
        Ok(s)
    }
}

/// `Vec<u8>` as one byte string rather than a sequence of `u8`s: the same
/// bytes on the wire for bincode, but copied in one go instead of one
/// element at a time, and, like [`text`], allocated only once present.
pub(crate) mod bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Vec<u8>, E> {
            Ok(b.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, b: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(b)
        }

        // Formats that write bytes as a sequence of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(crate::MAX_CHUNK));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}
