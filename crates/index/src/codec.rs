//! The one place that knows how values are laid out as bytes.
//!
//! Everything the index stores that is not a plain integer or path goes
//! through [`encode`] and [`decode`], so changing the encoding (and bumping
//! [`crate::FORMAT`]) touches this file only. Today: bincode 2 over serde,
//! with a size limit so a corrupt length prefix cannot make us allocate
//! without bound.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest value we ever decode. An entry holds at most a symlink
/// target (`PATH_MAX`, 4 KiB) and a host name; a megabyte is slack, not
/// a target.
pub(crate) const LIMIT: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Why a value could not be encoded or decoded, as text: callers add
/// what and where, and the codec's own error types stay private.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl CodecError {
    pub fn new(why: String) -> CodecError {
        CodecError(why)
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError(e.to_string()))
}

/// Decodes exactly one value filling all of `bytes`: trailing bytes mean
/// the value is not what we think it is.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after a {}-byte value",
            bytes.len() - used,
            used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let v = (7u64, String::from("host"), vec![1u8, 2, 3]);
        let bytes = encode(&v).expect("encode");
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes), Ok(v));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(u64, String, Vec<u8>)>(&longer).is_err());
        assert!(decode::<(u64, String, Vec<u8>)>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_huge_length_prefix_is_refused_not_allocated() {
        // Varint 0xfd + u64::MAX/2: a vector "of" 2^63 bytes.
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
