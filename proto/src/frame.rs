//! Framing: a 4-byte big-endian payload length, then the payload (one
//! encoded [`Message`]). Sans-IO: [`encode`] makes the bytes to write,
//! [`FrameDecoder`] takes the bytes read and hands out messages.

use crate::error::{DecodeError, EncodeError};
use crate::{codec, Message, FRAME_HEADER_LEN, MAX_FRAME};

/// The frame carrying `msg`: header and payload, ready to write.
///
/// Refuses a message that fails [`Message::validate`] (the peer would
/// reject it) or whose payload would exceed [`MAX_FRAME`].
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Like [`encode`], appending the frame to `out` (to batch several frames
/// into one write). On error `out` is left as it was.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    msg.validate().map_err(|error| EncodeError::Invalid {
        kind: msg.kind(),
        error,
    })?;
    // Measure first: an oversized message is refused without building it.
    let size = codec::encoded_len(msg)?;
    let too_large = || EncodeError::TooLarge {
        size,
        max: MAX_FRAME,
    };
    if size > MAX_FRAME {
        return Err(too_large());
    }
    let header = u32::try_from(size).map_err(|_| too_large())?.to_be_bytes();
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + size);
    out.extend_from_slice(&header);
    out.resize(start + FRAME_HEADER_LEN + size, 0);
    let result = match out.get_mut(start + FRAME_HEADER_LEN..) {
        Some(payload) => codec::encode_into_slice(msg, payload),
        None => Err(EncodeError::Codec(
            "frame buffer shorter than reserved".into(),
        )),
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The size of the frame [`encode`] makes of `msg`, header included,
/// without building it (for the log).
pub fn frame_len(msg: &Message) -> Result<usize, EncodeError> {
    Ok(FRAME_HEADER_LEN + codec::encoded_len(msg)?)
}

/// The payload length a frame header declares, checked against the
/// limits. Shared by [`FrameDecoder`] and the async reader so that both
/// refuse the same frames before buffering them.
pub(crate) fn payload_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header);
    let too_large = DecodeError::FrameTooLarge {
        len: u64::from(len),
        max: MAX_FRAME,
    };
    match usize::try_from(len) {
        Ok(0) => Err(DecodeError::EmptyFrame),
        Ok(n) if n <= MAX_FRAME => Ok(n),
        _ => Err(too_large),
    }
}

/// Decodes and validates one whole payload.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Message, DecodeError> {
    let msg = codec::decode(payload)?;
    msg.validate().map_err(|error| DecodeError::Invalid {
        kind: msg.kind(),
        error,
    })?;
    Ok(msg)
}

/// Turns a byte stream into messages, whatever pieces it arrives in.
///
/// [`feed`](FrameDecoder::feed) the bytes as they are read, then call
/// [`next_message`](FrameDecoder::next_message) until it returns
/// `Ok(None)`. The decoder holds the bytes fed and not yet consumed: at
/// most one incomplete frame (bounded by [`MAX_FRAME`]) plus the last
/// piece fed, if messages are pulled after each feed. It never reserves
/// memory for a frame's declared length; a header declaring more than the
/// limit is an error as soon as its four bytes are in.
///
/// Errors: a bad header (too large, zero) leaves the header in place, so
/// the error repeats; the stream cannot be resynchronised. A bad payload
/// (undecodable, invalid) is consumed; the framing is intact, but the
/// protocol still says to send `Error` and close.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed; consumed bytes are dropped
    /// lazily, to move the rest only once it is at most as long as what
    /// was consumed (amortised linear time, even fed a byte at a time).
    pos: usize,
}

impl FrameDecoder {
    /// A decoder at the start of a stream, holding nothing.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        let pending = self.buf.get(self.pos..).unwrap_or_default();
        let Some(header) = pending.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = payload_len(*header)?;
        let end = FRAME_HEADER_LEN + len;
        let Some(payload) = pending.get(FRAME_HEADER_LEN..end) else {
            return Ok(None);
        };
        let result = decode_payload(payload);
        self.pos += end;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        result.map(Some)
    }

    /// Bytes fed and not yet consumed: part of a frame still incomplete.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Call when the stream has ended: an error if it ended inside a
    /// frame.
    pub fn finish(&self) -> Result<(), DecodeError> {
        let pending = self.buf.get(self.pos..).unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        let need = match pending.first_chunk::<FRAME_HEADER_LEN>() {
            Some(h) => FRAME_HEADER_LEN + payload_len(*h)?,
            None => FRAME_HEADER_LEN,
        };
        Err(DecodeError::Truncated {
            have: pending.len(),
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_payload_length() {
        let frame = encode(&Message::Ping { nonce: 7 }).expect("encodes");
        let (header, payload) = frame.split_at(FRAME_HEADER_LEN);
        assert_eq!(
            u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize,
            payload.len()
        );
        // Variant 9 (Ping), then the nonce as a one-byte varint.
        assert_eq!(payload, [9, 7]);
    }

    #[test]
    fn finish_reports_a_cut_frame() {
        let frame = encode(&Message::Pull {
            after: 300,
            own_after: omirr_core::Timestamp(1),
        })
        .expect("encodes");
        let mut d = FrameDecoder::new();
        assert_eq!(d.finish(), Ok(()));
        d.feed(&frame[..2]);
        assert_eq!(d.finish(), Err(DecodeError::Truncated { have: 2, need: 4 }));
        d.feed(&frame[2..frame.len() - 1]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(DecodeError::Truncated {
                have: frame.len() - 1,
                need: frame.len()
            })
        );
        d.feed(&frame[frame.len() - 1..]);
        assert_eq!(
            d.next_message(),
            Ok(Some(Message::Pull {
                after: 300,
                own_after: omirr_core::Timestamp(1),
            }))
        );
        assert_eq!(d.finish(), Ok(()));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn trailing_bytes_in_a_payload_are_rejected() {
        let mut frame = encode(&Message::Ack { upto: 1 }).expect("encodes");
        frame.push(0);
        let n = (frame.len() - FRAME_HEADER_LEN) as u32;
        frame[..FRAME_HEADER_LEN].copy_from_slice(&n.to_be_bytes());
        let mut d = FrameDecoder::new();
        d.feed(&frame);
        assert_eq!(
            d.next_message(),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn unknown_variant_is_malformed() {
        let mut d = FrameDecoder::new();
        d.feed(&[0, 0, 0, 1, 200]);
        let err = d.next_message().expect_err("variant 200 does not exist");
        assert!(
            err.to_string()
                .contains("integer `200`, expected variant index"),
            "{err}"
        );
    }
}
