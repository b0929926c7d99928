//! Paths inside the mirrored namespace.
//!
//! File names on Linux are bytes, so a [`RelPath`] is bytes: relative,
//! `/`-separated, never empty components, never `.` or `..`, never NUL.
//! Whatever comes from a peer is checked here before anything else sees
//! it. The empty path is the namespace's root.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A checked relative path, e.g. `srv/www/index.html`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct RelPath(Vec<u8>);

/// Why bytes are not a [`RelPath`]. Each variant holds the offending
/// path as shown in messages: escaped ([`escape`]), and cut after 120
/// bytes when [`RelPath::new`] refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path starts with `/`.
    #[error("path {0} is absolute; expected a path relative to the mirror root")]
    Absolute(String),
    /// A component is `..`.
    #[error("path {0} has a '..' component, which could climb out of the mirror root")]
    DotDot(String),
    /// A component is empty (`a//b`, a trailing `/`) or `.`. Also what
    /// [`RelPath::join`] returns for a name that is empty or holds a `/`;
    /// then it holds that name, not a path.
    #[error("path {0} has an empty or '.' component")]
    EmptyComponent(String),
    /// The path holds a NUL byte.
    #[error("path {0} holds a NUL byte")]
    Nul(String),
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("path {path} is {len} bytes long; at most {max} are allowed (PATH_MAX)")]
    TooLong {
        /// The path, as shown.
        path: String,
        /// The path's length in bytes.
        len: usize,
        /// The limit, [`MAX_PATH_LEN`].
        max: usize,
    },
    /// A component is longer than [`MAX_NAME_LEN`].
    #[error("path {path} has a component of {len} bytes; at most {max} are allowed (NAME_MAX)")]
    NameTooLong {
        /// The path, as shown.
        path: String,
        /// The long component's length in bytes.
        len: usize,
        /// The limit, [`MAX_NAME_LEN`].
        max: usize,
    },
}

/// The longest path, in bytes: Linux's `PATH_MAX` (4096) less its NUL.
/// Bounding it at decode bounds what one change from a peer can make the
/// resolver do (it walks and copies every ancestor).
pub const MAX_PATH_LEN: usize = 4095;
/// The longest component, in bytes: Linux's `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 255;

/// A path cut for an error message: a path from a peer may be long.
fn shown_cut(bytes: &[u8]) -> String {
    const SHOWN: usize = 120;
    if bytes.len() > SHOWN {
        format!("{}...", escape(&bytes[..SHOWN]))
    } else {
        escape(bytes)
    }
}

impl RelPath {
    /// The root of the namespace.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Checks `bytes` and makes a path of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath, PathError> {
        let bytes = bytes.into();
        let shown = || shown_cut(&bytes);
        if bytes.is_empty() {
            return Ok(RelPath(bytes));
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong {
                path: shown(),
                len: bytes.len(),
                max: MAX_PATH_LEN,
            });
        }
        if bytes.contains(&0) {
            return Err(PathError::Nul(shown()));
        }
        if bytes[0] == b'/' {
            return Err(PathError::Absolute(shown()));
        }
        for c in bytes.split(|&b| b == b'/') {
            match c {
                b".." => return Err(PathError::DotDot(shown())),
                b"" | b"." => return Err(PathError::EmptyComponent(shown())),
                c if c.len() > MAX_NAME_LEN => {
                    return Err(PathError::NameTooLong {
                        path: shown(),
                        len: c.len(),
                        max: MAX_NAME_LEN,
                    })
                }
                _ => {}
            }
        }
        Ok(RelPath(bytes))
    }

    /// The path's bytes: no leading or trailing `/`, empty for the root.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the root (the empty path).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path one level up; `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        })
    }

    /// The last component; empty for the root.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// `self/name`; `name` must be one component.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, PathError> {
        if name.contains(&b'/') || name.is_empty() {
            return Err(PathError::EmptyComponent(escape(name)));
        }
        let mut b = self.0.clone();
        if !b.is_empty() {
            b.push(b'/');
        }
        b.extend_from_slice(name);
        RelPath::new(b)
    }

    /// Whether `self` lies strictly below `ancestor`.
    pub fn is_below(&self, ancestor: &RelPath) -> bool {
        if ancestor.is_root() {
            return !self.is_root();
        }
        self.0.len() > ancestor.0.len()
            && self.0.starts_with(&ancestor.0)
            && self.0[ancestor.0.len()] == b'/'
    }

    /// Whether `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &RelPath) -> bool {
        self == dir || self.is_below(dir)
    }

    /// Whether `self` is one of `tops` or lies below one: inside the
    /// mirrored trees.
    pub fn is_within_any(&self, tops: &[RelPath]) -> bool {
        tops.iter().any(|t| self.is_within(t))
    }

    /// `self` with the prefix `from` replaced by `to` (for directory
    /// renames); `None` if `self` is not `from` or below it.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if self == from {
            return Some(to.clone());
        }
        if !self.is_below(from) {
            return None;
        }
        let rest = if from.is_root() {
            &self.0[..]
        } else {
            &self.0[from.0.len() + 1..]
        };
        let mut b = to.0.clone();
        if !b.is_empty() {
            b.push(b'/');
        }
        b.extend_from_slice(rest);
        Some(RelPath(b))
    }

    /// Byte bounds of the keys strictly below this path in a byte-ordered
    /// map: `[lo, hi)`, or `(lo, ∞)` for the root. (`a/` to `a0`, because
    /// `0` follows `/`; `a-b` sorts between `a` and `a/x` and is outside.)
    pub fn below_range(&self) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        if self.is_root() {
            return (Excluded(Vec::new()), Unbounded);
        }
        let mut lo = self.0.clone();
        lo.push(b'/');
        let mut hi = self.0.clone();
        hi.push(b'/' + 1);
        (Included(lo), Excluded(hi))
    }

    /// `below_range` as paths, for maps keyed by [`RelPath`]. The bounds
    /// are keys, not valid paths.
    pub fn below_path_range(&self) -> (std::ops::Bound<RelPath>, std::ops::Bound<RelPath>) {
        use std::ops::Bound;
        let map = |b: Bound<Vec<u8>>| match b {
            Bound::Included(v) => Bound::Included(RelPath(v)),
            Bound::Excluded(v) => Bound::Excluded(RelPath(v)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (lo, hi) = self.below_range();
        (map(lo), map(hi))
    }

    /// The components, root first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// Every ancestor, nearest first, ending with the root.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> {
        std::iter::successors(self.parent(), RelPath::parent)
    }
}

impl TryFrom<Vec<u8>> for RelPath {
    type Error = PathError;
    fn try_from(v: Vec<u8>) -> Result<Self, PathError> {
        RelPath::new(v)
    }
}

impl From<RelPath> for Vec<u8> {
    fn from(p: RelPath) -> Vec<u8> {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", escape(&self.0))
    }
}

/// Bytes for display: UTF-8 as is, other bytes and control characters
/// (a newline in a name) escaped, so a log line stays one line.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::p;

    #[test]
    fn paths_and_names_are_bounded_as_linux_bounds_them() {
        let name = vec![b'n'; MAX_NAME_LEN];
        assert!(RelPath::new(name.clone()).is_ok());
        let mut long = name.clone();
        long.push(b'n');
        assert!(matches!(
            RelPath::new(long),
            Err(PathError::NameTooLong { len: 256, .. })
        ));
        let deep: Vec<u8> = (0..MAX_PATH_LEN)
            .map(|i| if i % 2 == 1 { b'/' } else { b'x' })
            .collect();
        let deep = RelPath::new(deep).expect("at the bound");
        assert!(matches!(
            deep.join(b"y"),
            Err(PathError::TooLong { len: 4097, .. })
        ));
    }

    #[test]
    fn rejects_unsafe_paths() {
        assert!(matches!(
            RelPath::new(&b"/etc"[..]),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(
            RelPath::new(&b"a/../b"[..]),
            Err(PathError::DotDot(_))
        ));
        assert!(matches!(
            RelPath::new(&b".."[..]),
            Err(PathError::DotDot(_))
        ));
        assert!(matches!(
            RelPath::new(&b"a//b"[..]),
            Err(PathError::EmptyComponent(_))
        ));
        assert!(matches!(
            RelPath::new(&b"a/./b"[..]),
            Err(PathError::EmptyComponent(_))
        ));
        assert!(matches!(
            RelPath::new(&b"a/"[..]),
            Err(PathError::EmptyComponent(_))
        ));
        assert!(matches!(RelPath::new(&b"a\0b"[..]), Err(PathError::Nul(_))));
        assert!(
            RelPath::new(&b"a/\xff\n/..x"[..]).is_ok(),
            "odd bytes are names too"
        );
    }

    #[test]
    fn structure() {
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), Some(RelPath::root()));
        assert_eq!(RelPath::root().parent(), None);
        assert_eq!(p("a/b/c").file_name(), b"c");
        assert_eq!(p("a").join(b"b"), Ok(p("a/b")));
        assert_eq!(RelPath::root().join(b"b"), Ok(p("b")));
        assert!(p("a").join(b"..").is_err());
        assert!(p("a/b").is_below(&p("a")));
        assert!(!p("ab").is_below(&p("a")));
        assert!(!p("a").is_below(&p("a")));
        assert!(p("a").is_below(&RelPath::root()));
        assert_eq!(p("a/b/c").rebase(&p("a/b"), &p("x")), Some(p("x/c")));
        assert_eq!(p("a/b").rebase(&p("a/b"), &p("x/y")), Some(p("x/y")));
        assert_eq!(p("a/bc").rebase(&p("a/b"), &p("x")), None);
        let anc: Vec<RelPath> = p("a/b/c").ancestors().collect();
        assert_eq!(anc, [p("a/b"), p("a"), RelPath::root()]);
    }

    #[test]
    fn below_range_holds_exactly_the_subtree() {
        use std::collections::BTreeSet;
        let all: BTreeSet<RelPath> = ["a", "a-b", "a/x", "a/x/y", "a0", "ab", "b"]
            .iter()
            .map(|s| p(s))
            .collect();
        let below: Vec<String> = all
            .range(p("a").below_path_range())
            .map(|p| p.to_string())
            .collect();
        assert_eq!(below, ["a/x", "a/x/y"]);
        assert_eq!(
            all.range(RelPath::root().below_path_range()).count(),
            all.len()
        );
    }

    #[test]
    fn display_escapes() {
        assert_eq!(p("a/\u{e9}\n\\").to_string(), "a/\u{e9}\\n\\\\");
        assert_eq!(
            RelPath::new(&b"x\xff"[..]).expect("ok").to_string(),
            "x\\xff"
        );
    }

    #[test]
    fn within_is_the_path_itself_or_below_it() {
        let tops = [p("srv/www"), p("etc")];
        assert!(p("srv/www").is_within_any(&tops));
        assert!(p("srv/www/a").is_within_any(&tops));
        assert!(!p("srv/wwwx").is_within_any(&tops));
        assert!(!p("srv").is_within_any(&tops));
        assert!(p("anything").is_within(&RelPath::root()));
    }
}
