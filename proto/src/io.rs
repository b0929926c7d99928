//! Thin async helpers: one message from or to a tokio stream, under the
//! same limits as [`crate::FrameDecoder`] and [`crate::encode`]. The
//! stream (TCP, TLS, a test pipe) is the caller's; nothing here opens,
//! buffers beyond one frame, or closes anything.

use crate::error::{DecodeError, EncodeError};
use crate::frame::{decode_payload, payload_len};
use crate::{encode, Message, FRAME_HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first bite of a payload's buffer, and the least it grows by: a
/// header alone does not make us reserve its declared length.
const READ_STEP: usize = 64 * 1024;

/// Why [`read_message`] or [`read_frame`] returned no message. After any
/// of these the session is over.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream ended without its closing handshake: with TLS, the peer
    /// sent no close_notify (rustls reports `UnexpectedEof`). An omirrd
    /// that stops does not send one, so this is also how a peer's normal
    /// stop looks.
    #[error("the connection ended without the peer's TLS close_notify (its omirrd stopped or was killed, or its host or the network went down)")]
    Cut,
    /// Reading from the stream failed (other than [`ReadError::Cut`]).
    #[error("reading a frame: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes read are not a valid frame or message, or the stream
    /// ended inside a frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why [`write_message`] did not write a message.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing to the stream failed; part of the frame may have been
    /// written, so the stream must be closed.
    #[error("writing a frame: {0}")]
    Io(#[from] std::io::Error),
    /// The message could not be framed; nothing was written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Reads one frame and returns its message; `Ok(None)` if the stream
/// ended cleanly between frames. The payload buffer grows as bytes arrive,
/// never past the declared length, which is checked against
/// [`crate::MAX_FRAME`] before anything is reserved.
///
/// Not cancel-safe: dropping the future inside a frame loses the bytes
/// read so far and with them the framing. A loop that `select!`s between
/// reading and other work should read into its own buffer and use
/// [`crate::FrameDecoder`], or read in a task of its own.
pub async fn read_message<R>(r: &mut R) -> Result<Option<Message>, ReadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    Ok(read_frame(r).await?.map(|(m, _)| m))
}

/// [`read_message`], with the size of the frame it read (header
/// included), for the log.
pub async fn read_frame<R>(r: &mut R) -> Result<Option<(Message, usize)>, ReadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while let Some(rest) = header.get_mut(got..).filter(|s| !s.is_empty()) {
        let n = r.read(rest).await.map_err(read_error)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(DecodeError::Truncated {
                have: got,
                need: FRAME_HEADER_LEN,
            }
            .into());
        }
        got += n;
    }
    let len = payload_len(header)?;
    let mut payload: Vec<u8> = Vec::new();
    while payload.len() < len {
        if payload.len() == payload.capacity() {
            // Geometric growth (amortised copying), capped at the
            // declared length.
            let want = (payload.capacity() * 2).max(READ_STEP).min(len);
            payload.reserve_exact(want - payload.len());
        }
        let filled = payload.len();
        payload.resize(payload.capacity().min(len), 0);
        let n = match payload.get_mut(filled..) {
            Some(space) => r.read(space).await.map_err(read_error)?,
            None => 0,
        };
        payload.truncate(filled + n);
        if n == 0 {
            return Err(DecodeError::Truncated {
                have: FRAME_HEADER_LEN + filled,
                need: FRAME_HEADER_LEN + len,
            }
            .into());
        }
    }
    Ok(Some((decode_payload(&payload)?, FRAME_HEADER_LEN + len)))
}

fn read_error(e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ReadError::Cut,
        _ => ReadError::Io(e),
    }
}

/// Encodes `msg` and writes its frame. Does not flush: the caller decides
/// when a batch of messages goes out. Not cancel-safe: a write dropped
/// half-way leaves half a frame on the stream, which must then be closed.
pub async fn write_message<W>(w: &mut W, msg: &Message) -> Result<(), WriteError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}
