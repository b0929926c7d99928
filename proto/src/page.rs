//! Splitting a run of index changes into `Changes` pages that each fit a
//! frame.

use crate::error::EncodeError;
use crate::message::validate_changes;
use crate::{codec, Change, Message, Seq, MAX_CHANGES_PER_PAGE, MAX_FRAME};

/// Splits `changes` (in increasing sequence order) into `Changes`
/// messages, each within [`MAX_FRAME`] and [`MAX_CHANGES_PER_PAGE`], in
/// order, losing nothing.
///
/// Every page but the last has `upto` = its last change's sequence and
/// `done: false`: the receiver's cursor may advance that far, and more
/// follows. The last page carries the caller's `upto` and `done`. No
/// changes give one empty page, which still moves the receiver's cursor to
/// `upto` (sequences the sender skipped) or says `done`.
///
/// Errors: `changes` out of order or beyond `upto`, an invalid entry (as
/// [`Message::validate`] would find), or one change too big for a frame on
/// its own.
pub fn paginate(
    changes: Vec<(Seq, Change)>,
    upto: Seq,
    done: bool,
) -> Result<Vec<Message>, EncodeError> {
    validate_changes(&changes, upto).map_err(|error| EncodeError::Invalid {
        kind: "Changes",
        error,
    })?;
    let budget = MAX_FRAME.saturating_sub(codec::changes_page_overhead()?);
    let mut pages = Vec::new();
    let mut page: Vec<(Seq, Change)> = Vec::new();
    let mut used = 0usize;
    for (seq, change) in changes {
        let size = page_cost(seq, &change)?;
        if size > budget {
            return Err(EncodeError::ChangeTooLarge {
                seq,
                path: change.path.to_string(),
                size,
                max: MAX_FRAME,
            });
        }
        if !page.is_empty() && (used + size > budget || page.len() == MAX_CHANGES_PER_PAGE) {
            pages.push(close(std::mem::take(&mut page), None, false));
            used = 0;
        }
        used += size;
        page.push((seq, change));
    }
    pages.push(close(page, Some(upto), done));
    Ok(pages)
}

/// What one change counts against a page's budget: its encoding, plus
/// the memory the receiver's decoder reserves for it in the page's list.
/// The decoder's limit is on what decoding reserves (its variable-length
/// fields, and every list element at its size in memory), which exceeds
/// the encoded size: counting only the encoding made pages of long paths
/// that fit a frame and could not be decoded, so the same page failed the
/// session at every reconnect.
pub fn page_cost(seq: Seq, change: &Change) -> Result<usize, EncodeError> {
    Ok(codec::encoded_len(&(seq, change))? + std::mem::size_of::<(Seq, Change)>())
}

fn close(changes: Vec<(Seq, Change)>, upto: Option<Seq>, done: bool) -> Message {
    // An intermediate page is never empty, so its last sequence exists; the
    // fallback 0 is unreachable and would only make the page say less.
    let upto = upto.unwrap_or_else(|| changes.last().map_or(0, |(s, _)| *s));
    Message::Changes {
        changes,
        upto,
        done,
    }
}
