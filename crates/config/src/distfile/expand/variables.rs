//! Step 1 of expansion, variables: `$X` and `${NAME}` substitution,
//! distributing over list values, and the `-d NAME=VALUE` definitions of
//! the command line.

use super::{expansion_size, EChar, EWord, Expander, Use, MAX_WORDS};
use crate::diag::{Diagnostic, Pos};
use crate::distfile::lex::{self, Piece, RawWord};
use crate::distfile::parse;
use std::path::PathBuf;

impl Expander<'_> {
    pub(super) fn define_from_command_line(&mut self, name: &str, value: &str) {
        let file = PathBuf::from(format!("-d {name}"));
        if !parse::is_identifier(name) {
            self.push(Diagnostic::error(
                &file,
                Pos::new(1, 1),
                format!("invalid variable name '{name}' in -d: expected NAME=VALUE"),
            ));
            return;
        }
        let (tokens, mut diags) = lex::lex(value, &file);
        let (expr, parse_diags) = parse::parse_value(tokens, &file);
        diags.extend(parse_diags);
        let had_errors = diags.iter().any(Diagnostic::is_error);
        for d in diags {
            self.push(d);
        }
        if let (Some(expr), false) = (expr, had_errors) {
            // Variables in a -d value refer to other -d values only.
            let saved = std::mem::replace(&mut self.file, file);
            let errors = self.error_count();
            let words = self.eval(&expr, Use::Verbatim);
            self.file = saved;
            // A broken value defines nothing (its error is reported).
            if self.error_count() == errors {
                self.vars.insert(name.to_string(), (words, Pos::new(1, 1)));
            }
            self.overridden.insert(name.to_string());
        }
    }

    /// Step 1: variable substitution, distributing over list values.
    pub(super) fn substitute(&mut self, word: &RawWord) -> Vec<EWord> {
        // A word that is just `${X}` keeps the positions of X's elements,
        // so errors about them point into X's definition.
        if let [Piece::Var { name, pos }] = word.pieces.as_slice() {
            let Some(size) = self.vars.get(name).map(|(v, _)| expansion_size(v)) else {
                self.undefined(name, *pos, None);
                return Vec::new();
            };
            if !self.charge(*pos, size, || word.display()) {
                return Vec::new();
            }
            return self
                .vars
                .get(name)
                .map(|(v, _)| v.clone())
                .unwrap_or_default();
        }
        let mut acc: Vec<Vec<EChar>> = vec![Vec::new()];
        // Characters in `acc`: it only grows, so checking each step
        // against what may still be produced bounds every step.
        let mut chars = 0usize;
        for (i, piece) in word.pieces.iter().enumerate() {
            match piece {
                Piece::Char { c, escaped, pos } => {
                    chars = chars.saturating_add(acc.len());
                    if chars.saturating_add(2 * acc.len()) > self.remaining() {
                        self.charge(*pos, usize::MAX, || word.display());
                        return Vec::new();
                    }
                    for a in &mut acc {
                        a.push(EChar {
                            c: *c,
                            escaped: *escaped,
                            pos: *pos,
                        });
                    }
                }
                Piece::Var { name, pos } => {
                    let Some((values, _)) = self.vars.get(name) else {
                        self.undefined(name, *pos, Some(&word.pieces[i + 1..]));
                        return Vec::new();
                    };
                    if acc.len().saturating_mul(values.len()) > MAX_WORDS {
                        self.error(
                            *pos,
                            format!(
                                "expanding '{}' yields more than {MAX_WORDS} names",
                                word.display()
                            ),
                        );
                        return Vec::new();
                    }
                    let value_chars: usize = values.iter().map(|v| v.chars.len()).sum();
                    let grown = chars
                        .saturating_mul(values.len())
                        .saturating_add(acc.len().saturating_mul(value_chars));
                    let words = acc.len().saturating_mul(values.len());
                    if grown.saturating_add(words.saturating_mul(2)) > self.remaining() {
                        self.charge(*pos, usize::MAX, || word.display());
                        return Vec::new();
                    }
                    chars = grown;
                    acc = acc
                        .iter()
                        .flat_map(|prefix| {
                            values.iter().map(move |v| {
                                let mut w = Vec::with_capacity(prefix.len() + v.chars.len());
                                w.extend_from_slice(prefix);
                                w.extend_from_slice(&v.chars);
                                w
                            })
                        })
                        .collect();
                }
            }
        }
        if !self.charge(word.pos, chars + 2 * acc.len(), || word.display()) {
            return Vec::new();
        }
        acc.into_iter()
            .map(|chars| EWord {
                chars,
                pos: word.pos,
            })
            .collect()
    }

    fn undefined(&mut self, name: &str, pos: Pos, rest: Option<&[Piece]>) {
        let mut msg = format!(
            "undefined variable '{name}': define it with '{name} = ...' or -d {name}=VALUE"
        );
        // rdist reads `$FILES` as `${F}ILES`; say so when that is the slip.
        if name.len() == 1 {
            let tail: String = rest
                .unwrap_or_default()
                .iter()
                .map_while(|p| match p {
                    Piece::Char {
                        c, escaped: false, ..
                    } if c.is_ascii_alphanumeric() || *c == '_' => Some(*c),
                    _ => None,
                })
                .collect();
            if !tail.is_empty() {
                msg.push_str(&format!(
                    " ($ takes a one-letter name; for the variable {name}{tail} write ${{{name}{tail}}})"
                ));
            }
        }
        self.error(pos, msg);
    }
}
