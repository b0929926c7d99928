//! The payload encoding: the only module that knows it is bincode.
//!
//! bincode 2 through serde, `config::standard()` (little-endian, variable
//! length integers: values below 251 take one byte), with a decoding limit
//! of [`MAX_FRAME`]: no field may claim more memory than a whole frame
//! carries. Enum variants are numbered in declaration order; sequences and
//! strings are a varint length and their elements. `PROTOCOL.md` spells
//! the resulting bytes out.
//!
//! Swapping the encoding means rewriting this module (and the byte-level
//! part of `PROTOCOL.md`), and bumping [`crate::PROTOCOL_VERSION`].

use crate::error::{DecodeError, EncodeError};
use crate::{Message, MAX_FRAME};
use bincode::config::Config;
use serde::Serialize;

fn config() -> impl Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// How many bytes `value` encodes to, without allocating a buffer for it.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, EncodeError> {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counter, config()).map_err(encode_error)?;
    Ok(counter.bytes_written)
}

/// Encodes `msg` into `out`, which must be exactly [`encoded_len`] long.
pub(crate) fn encode_into_slice(msg: &Message, out: &mut [u8]) -> Result<(), EncodeError> {
    let written = bincode::serde::encode_into_slice(msg, out, config()).map_err(encode_error)?;
    if written != out.len() {
        return Err(EncodeError::Codec(format!(
            "encoded {written} bytes where {} were measured",
            out.len()
        )));
    }
    Ok(())
}

/// The most a `Changes` page adds to the sum of its changes' encodings:
/// variant number, `upto`, `done`, and the length prefix of the change
/// list at its widest (a varint grows from 1 to at most 9 bytes).
pub(crate) fn changes_page_overhead() -> Result<usize, EncodeError> {
    let empty = Message::Changes {
        changes: Vec::new(),
        upto: u64::MAX,
        done: false,
    };
    Ok(encoded_len(&empty)? + 8)
}

/// Decodes one message from a whole payload; bytes left over are an error
/// (a frame carries exactly one message).
pub(crate) fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
    let (msg, used): (Message, usize) =
        bincode::serde::decode_from_slice(payload, config()).map_err(decode_error)?;
    match payload.len().checked_sub(used) {
        Some(0) => Ok(msg),
        Some(extra) => Err(DecodeError::TrailingBytes { extra }),
        None => Err(DecodeError::Malformed(format!(
            "decoder reports {used} bytes read from a {}-byte payload",
            payload.len()
        ))),
    }
}

fn encode_error(e: bincode::error::EncodeError) -> EncodeError {
    EncodeError::Codec(format!("{e:?}"))
}

/// bincode's errors print as their `Debug` form; say what they mean.
fn decode_error(e: bincode::error::DecodeError) -> DecodeError {
    use bincode::error::DecodeError as B;
    DecodeError::Malformed(match e {
        B::UnexpectedEnd { .. } => "a field runs past the end of the frame".to_owned(),
        B::LimitExceeded => format!("a field claims more than the {MAX_FRAME}-byte frame limit"),
        B::UnexpectedVariant {
            type_name, found, ..
        } => format!("unknown {type_name} variant {found} (a newer protocol?)"),
        B::Utf8 { inner } => format!("text that is not UTF-8 ({inner})"),
        B::InvalidBooleanValue(v) => format!("a boolean holding {v}, not 0 or 1"),
        B::OutsideUsizeRange(v) => format!("a length of {v}, beyond this machine's address space"),
        B::InvalidIntegerType { .. } => "a mis-encoded integer".to_owned(),
        // Serde's custom errors: RelPath's checks, the collection limits.
        B::OtherString(s) => s,
        B::Other(s) => s.to_owned(),
        other => format!("{other:?}"),
    })
}
