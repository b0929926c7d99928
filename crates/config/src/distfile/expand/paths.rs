//! Step 3 of expansion, and paths from expanded words: `~` and `~user`
//! (with their home directories looked up once each), globbing of source
//! paths against the root, and the checks that make a word a mirrored
//! path (no `..`) or an `except`/`special` path pattern.

use super::{EChar, EWord, Expander};
use crate::distfile::{PathMatch, Pattern};
use std::path::{Path, PathBuf};

/// The longest path Linux opens (`PATH_MAX`, terminating NUL included):
/// a longer glob pattern matches nothing.
const PATH_MAX: usize = 4096;

impl Expander<'_> {
    /// Step 3a: `~` and `~user` at the start of a path; a relative path is
    /// taken from the home directory, as in rdist.
    pub(super) fn tilde(&mut self, w: EWord) -> Option<EWord> {
        let starts_tilde = matches!(
            w.chars.first(),
            Some(EChar {
                c: '~',
                escaped: false,
                ..
            })
        );
        let starts_slash = matches!(w.chars.first(), Some(EChar { c: '/', .. }));
        if starts_slash {
            return Some(w);
        }
        let (user, rest_at) = if starts_tilde {
            let end = w
                .chars
                .iter()
                .position(|c| c.c == '/')
                .unwrap_or(w.chars.len());
            let user: String = w.chars[1..end].iter().map(|c| c.c).collect();
            (user, end)
        } else {
            (String::new(), 0)
        };
        let home = self
            .homes
            .entry(user)
            .or_insert_with_key(|user| home_of(user))
            .clone();
        let home = match home {
            Ok(h) => h,
            Err(msg) => {
                self.error(w.pos, format!("cannot expand '{}': {msg}", w.text()));
                return None;
            }
        };
        let mut chars = EWord::literal(home.trim_end_matches('/'), w.pos).chars;
        if rest_at == 0 || rest_at < w.chars.len() {
            chars.push(EChar {
                c: '/',
                escaped: true,
                pos: w.pos,
            });
        }
        let tail = if starts_tilde {
            w.chars.get(rest_at + 1..).unwrap_or_default()
        } else {
            &w.chars[..]
        };
        chars.extend(tail.iter().cloned());
        Some(EWord { chars, pos: w.pos })
    }

    /// Step 3b: globbing a source path against the root.
    pub(super) fn glob(&mut self, w: EWord) -> Vec<EWord> {
        if !w.has_glob_meta() {
            return vec![w];
        }
        // The glob crate walks a pattern one component per stack frame,
        // going on down `.` and `..` whether or not the tree is that deep:
        // `/./././…/*` in a 16 KB Distfile overflowed the stack (found by
        // the fuzz harness, crates/fuzz). So no pattern longer than a path
        // can be, and none with `.` or `..` (which `path` refuses later
        // anyway): the walk goes only as deep as the tree.
        let len = w.chars.iter().map(|c| c.c.len_utf8()).sum::<usize>();
        if len > PATH_MAX {
            self.error(
                w.pos,
                format!(
                    "pattern '{}…' is {len} bytes long: no path is longer than {PATH_MAX} bytes",
                    w.chars.iter().take(40).map(|c| c.c).collect::<String>()
                ),
            );
            return Vec::new();
        }
        let w = match without_dots(w) {
            Ok(w) => w,
            Err(w) => {
                let text = w.text();
                self.error(
                    w.pos,
                    format!("'{text}': '..' is not allowed in mirrored paths"),
                );
                return Vec::new();
            }
        };
        let Some(root) = self.root.to_str() else {
            self.error(
                w.pos,
                format!(
                    "cannot expand '{}': the root {} is not valid UTF-8",
                    w.text(),
                    self.root.display()
                ),
            );
            return Vec::new();
        };
        let root = root.trim_end_matches('/');
        let pattern = format!("{}{}", glob::Pattern::escape(root), w.glob_pattern());
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let paths = match glob::glob_with(&pattern, opts) {
            Ok(p) => p,
            Err(e) => {
                self.error(w.pos, format!("invalid pattern '{}': {}", w.text(), e.msg));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for p in paths {
            match p {
                Ok(p) => {
                    let rel = p
                        .strip_prefix(if root.is_empty() { "/" } else { root })
                        .unwrap_or(&p);
                    let shown = Path::new("/").join(rel);
                    out.push(EWord::literal(&shown.to_string_lossy(), w.pos));
                }
                Err(e) => self.warn(w.pos, format!("while expanding '{}': {e}", w.text())),
            }
        }
        if out.is_empty() {
            self.warn(
                w.pos,
                format!(
                    "'{}' matches nothing under {}",
                    w.text(),
                    if root.is_empty() { "/" } else { root }
                ),
            );
        }
        out
    }

    /// A path from an expanded word: absolute, without `.` or repeated
    /// slashes, and without `..` (which would climb out of the root).
    pub(super) fn path(&mut self, w: &EWord) -> Option<PathBuf> {
        let text = w.text();
        let mut p = PathBuf::from("/");
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    self.error(
                        w.pos,
                        format!("'{text}': '..' is not allowed in mirrored paths"),
                    );
                    return None;
                }
                _ => p.push(part),
            }
        }
        Some(p)
    }

    pub(super) fn path_match(&mut self, w: &EWord) -> Option<PathMatch> {
        if w.has_glob_meta() {
            match Pattern::new(&w.glob_pattern()) {
                Ok(g) => Some(PathMatch::Glob(g)),
                Err(e) => {
                    self.error(w.pos, format!("invalid pattern '{}': {e}", w.text()));
                    None
                }
            }
        } else {
            self.path(w).map(PathMatch::Path)
        }
    }
}

/// `w` without `.` components and repeated slashes, which name nothing
/// more; `Err(w)` if it has a `..` component.
fn without_dots(w: EWord) -> Result<EWord, EWord> {
    let parts: Vec<&[EChar]> = w.chars.split(|c| c.c == '/').collect();
    if parts
        .iter()
        .any(|p| p.len() == 2 && p.iter().all(|c| c.c == '.'))
    {
        return Err(w);
    }
    let last = parts.len() - 1;
    let mut chars = Vec::with_capacity(w.chars.len());
    for (i, part) in parts.iter().enumerate() {
        let dot = part.len() == 1 && part[0].c == '.';
        // The first part is empty for an absolute pattern, the last one
        // for a trailing slash: both are kept.
        if (i > 0 && i < last && part.is_empty()) || dot {
            continue;
        }
        if i > 0 {
            let slash = w.chars.iter().find(|c| c.c == '/').cloned();
            chars.extend(slash);
        }
        chars.extend_from_slice(part);
    }
    Ok(EWord { chars, pos: w.pos })
}

#[cfg(test)]
thread_local! {
    /// How many times this thread asked the password database: the test
    /// below counts lookups instead of timing them.
    static HOME_LOOKUPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn home_of(user: &str) -> Result<String, String> {
    use nix::unistd::{Uid, User};
    #[cfg(test)]
    HOME_LOOKUPS.with(|n| n.set(n.get() + 1));
    if user.is_empty() {
        if let Ok(Some(u)) = User::from_uid(Uid::effective()) {
            return Ok(u.dir.to_string_lossy().into_owned());
        }
        return std::env::var("HOME")
            .map_err(|_| "the current user has no home directory".to_string());
    }
    match User::from_name(user) {
        Ok(Some(u)) => Ok(u.dir.to_string_lossy().into_owned()),
        Ok(None) => Err(format!("unknown user '{user}'")),
        Err(e) => Err(format!("cannot look up user '{user}': {e}")),
    }
}

/// `path` (absolute, in the Distfile's namespace) on disk under `root`.
pub(crate) fn join_under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::*;
    use crate::distfile::ParseOptions;

    /// Found by the fuzz harness (crates/fuzz): `~user` was looked up in
    /// the password database once per word, so `~nosuchuser/` before a
    /// brace expansion to 59,049 names took 3 s in a debug build (an
    /// unknown user is the slow case: every name service is asked). Now
    /// once per user, whatever the number of words.
    #[test]
    fn a_home_directory_is_looked_up_once_per_user() {
        let nine = "{1,2,3,4,5,6,7,8,9}";
        let text = format!(
            "( ~nosuchuser4242/{nine}{nine}{nine} ~nosuchuser4243/{nine} ~/{nine} ) -> ( a b )"
        );
        let (tokens, _) = crate::distfile::lex::lex(&text, Path::new("omirrd.conf"));
        let (stmts, _) = crate::distfile::parse::parse(tokens, Path::new("omirrd.conf"));
        let options = ParseOptions {
            root: PathBuf::from("/nonexistent-omirr-root"),
            defines: Vec::new(),
            known_hosts: None,
        };
        HOME_LOOKUPS.with(|n| n.set(0));
        let (_, diags) = build(&stmts, Path::new("omirrd.conf"), &options);
        // Three users: two unknown ones and the current one.
        assert_eq!(HOME_LOOKUPS.with(|n| n.get()), 3);
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("unknown user 'nosuchuser4242'")),
            "{diags:?}"
        );
    }
}
