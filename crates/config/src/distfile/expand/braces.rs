//! Step 2 of expansion: csh brace expansion, `{a,b}`.

use super::{EChar, EWord, MAX_EXPANDED, MAX_WORDS};
use crate::diag::Pos;

/// Step 2: csh brace expansion. `{}` stays literal, as in csh. At most
/// [`MAX_WORDS`] names, and `budget` units of [`MAX_EXPANDED`] held at
/// any time.
pub(super) fn expand_braces(w: EWord, budget: usize) -> Result<Vec<EWord>, (Pos, String)> {
    let mut done = Vec::new();
    // What `done` and `todo` hold, in MAX_EXPANDED's units.
    let mut held = w.chars.len() + 2;
    let mut todo = vec![w];
    while let Some(w) = todo.pop() {
        let cs = &w.chars;
        let open = (0..cs.len()).find(|&i| {
            !cs[i].escaped && cs[i].c == '{' && !matches!(cs.get(i + 1), Some(EChar { c: '}', .. }))
        });
        let Some(open) = open else {
            done.push(w);
            continue;
        };
        held -= w.chars.len() + 2;
        let mut depth = 0usize;
        let mut close = None;
        let mut commas = Vec::new();
        for (i, c) in cs.iter().enumerate().skip(open) {
            if c.escaped {
                continue;
            }
            match c.c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                ',' if depth == 1 => commas.push(i),
                _ => {}
            }
        }
        let Some(close) = close else {
            return Err((
                cs[open].pos,
                format!("unmatched '{{' in '{}': expected '}}'", w.text()),
            ));
        };
        let mut bounds = vec![open];
        bounds.extend(&commas);
        bounds.push(close);
        if done.len() + todo.len() + bounds.len() > MAX_WORDS {
            return Err((
                w.pos,
                format!(
                    "brace expansion of '{}' yields more than {MAX_WORDS} names",
                    w.text()
                ),
            ));
        }
        // Each alternative keeps what is around the braces.
        let around = open + (cs.len() - close - 1) + 2;
        let made = bounds.windows(2).fold(0usize, |n, pair| {
            n.saturating_add(around + (pair[1] - pair[0] - 1))
        });
        if held.saturating_add(made) > budget {
            return Err((
                w.pos,
                format!(
                    "brace expansion of '{}' takes the Distfile's lists past {MAX_EXPANDED} characters in all: \
                     list fewer or shorter names",
                    w.text()
                ),
            ));
        }
        held += made;
        // Pushed in reverse so that alternatives come out in written order.
        for pair in bounds.windows(2).rev() {
            let mut chars = Vec::with_capacity(around - 2 + (pair[1] - pair[0] - 1));
            chars.extend_from_slice(&cs[..open]);
            chars.extend_from_slice(&cs[pair[0] + 1..pair[1]]);
            chars.extend_from_slice(&cs[close + 1..]);
            todo.push(EWord { chars, pos: w.pos });
        }
    }
    Ok(done)
}
