//! A pattern in `except`, `special` or `cmdspecial`: `*`, `?` and `[...]`
//! matched against a path's names as bytes, so that a name that is not
//! UTF-8 matches too, in time linear in the name (globset compiles each
//! name's pattern to a regular expression; the `glob` crate backtracks,
//! which is exponential for patterns such as `*a*a*a*a*b`).
//!
//! As in the shell: `*` and `?` never match `/`, and a name that starts
//! with `.` matches only a pattern name that starts with a literal `.`.

use globset::{GlobBuilder, GlobMatcher};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// A compiled pattern, one matcher per name of the pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    absolute: bool,
    names: Vec<Name>,
}

#[derive(Debug, Clone)]
struct Name {
    matcher: GlobMatcher,
    /// The pattern name starts with a literal `.`, so it may match a
    /// hidden name.
    literal_dot: bool,
}

impl Pattern {
    /// Compiles `text`; the error says what is wrong with it.
    pub fn new(text: &str) -> Result<Pattern, String> {
        let absolute = text.starts_with('/');
        let mut names = Vec::new();
        for name in text.split('/').filter(|n| !n.is_empty() && *n != ".") {
            let glob = GlobBuilder::new(name)
                .literal_separator(true)
                // The Distfile's own escapes are already resolved: a
                // backslash left here is a literal character.
                .backslash_escape(false)
                .build()
                .map_err(|e| e.kind().to_string())?;
            names.push(Name {
                matcher: glob.compile_matcher(),
                literal_dot: name.starts_with('.'),
            });
        }
        if names.is_empty() {
            return Err("the pattern names nothing".to_string());
        }
        Ok(Pattern {
            text: text.to_string(),
            absolute,
            names,
        })
    }

    /// Whether `path` itself (not an ancestor) matches.
    pub fn matches_exactly(&self, path: &Path) -> bool {
        self.matches_prefix(path, true)
    }

    /// Whether `path` or one of its ancestors matches.
    pub fn matches_path_or_ancestor(&self, path: &Path) -> bool {
        self.matches_prefix(path, false)
    }

    fn matches_prefix(&self, path: &Path, exactly: bool) -> bool {
        let mut components = path.components().peekable();
        let absolute = matches!(components.peek(), Some(Component::RootDir));
        if absolute != self.absolute {
            return false;
        }
        let mut names = components.filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        });
        for pattern in &self.names {
            let Some(name) = names.next() else {
                return false;
            };
            if name.as_bytes().first() == Some(&b'.') && !pattern.literal_dot {
                return false;
            }
            if !pattern.matcher.is_match(name) {
                return false;
            }
        }
        !exactly || names.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn p(text: &str) -> Pattern {
        match Pattern::new(text) {
            Ok(p) => p,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn star_and_question_stay_within_a_name() {
        let key = p("/etc/ssh/*_key");
        assert!(key.matches_path_or_ancestor(Path::new("/etc/ssh/ssh_host_rsa_key")));
        assert!(!key.matches_path_or_ancestor(Path::new("/etc/ssh/ssh_host_rsa_key.pub")));
        assert!(!key.matches_path_or_ancestor(Path::new("/etc/ssh/d/x_key")));
        assert!(!key.matches_path_or_ancestor(Path::new("/etc/ssh")));
        assert!(p("/a/?.c").matches_exactly(Path::new("/a/b.c")));
        assert!(!p("/a/?.c").matches_exactly(Path::new("/a/bb.c")));
        assert!(!p("/a*").matches_exactly(Path::new("/a/b")));
    }

    #[test]
    fn a_match_covers_everything_below() {
        let cache = p("/srv/*/cache");
        assert!(cache.matches_path_or_ancestor(Path::new("/srv/www/cache/x/y")));
        assert!(!cache.matches_exactly(Path::new("/srv/www/cache/x/y")));
        assert!(!cache.matches_path_or_ancestor(Path::new("/srv/www/cache2")));
    }

    #[test]
    fn hidden_names_need_a_literal_dot() {
        assert!(!p("/home/*").matches_exactly(Path::new("/home/.ssh")));
        assert!(!p("/home/?ssh").matches_exactly(Path::new("/home/.ssh")));
        assert!(!p("/home/[.]ssh").matches_exactly(Path::new("/home/.ssh")));
        assert!(p("/home/.*").matches_exactly(Path::new("/home/.ssh")));
        assert!(p("/home/*").matches_exactly(Path::new("/home/a.ssh")));
    }

    #[test]
    fn classes_and_escaped_metacharacters() {
        assert!(p("/v/[0-9]").matches_exactly(Path::new("/v/7")));
        assert!(!p("/v/[!0-9]").matches_exactly(Path::new("/v/7")));
        // The expander writes an escaped `*` as `[*]`.
        assert!(p("/v/a[*]").matches_exactly(Path::new("/v/a*")));
        assert!(!p("/v/a[*]").matches_exactly(Path::new("/v/ab")));
        assert!(p("/v/a\\b").matches_exactly(Path::new("/v/a\\b")));
    }

    #[test]
    fn double_star_is_a_star() {
        let any = p("/srv/**/cache");
        assert!(any.matches_exactly(Path::new("/srv/www/cache")));
        assert!(!any.matches_exactly(Path::new("/srv/a/b/cache")));
        assert!(!any.matches_exactly(Path::new("/srv/.git/cache")));
        assert!(p("/srv/a**").matches_path_or_ancestor(Path::new("/srv/abc/d")));
    }

    #[test]
    fn names_that_are_not_utf8_match() {
        let name = OsStr::from_bytes(b"caf\xe9_key");
        let path = Path::new("/etc/ssh").join(name);
        assert!(p("/etc/ssh/*_key").matches_exactly(&path));
        assert!(p("/etc/ssh/caf?_key").matches_exactly(&path));
        assert!(!p("/etc/ssh/*.pub").matches_exactly(&path));
    }

    #[test]
    fn relative_and_absolute_do_not_mix() {
        assert!(!p("etc/*").matches_exactly(Path::new("/etc/x")));
        assert!(p("etc/*").matches_exactly(Path::new("etc/x")));
    }

    #[test]
    fn many_stars_against_a_long_name_finish() {
        // Exponential for a backtracking matcher such as the glob crate's.
        let name = "a".repeat(200);
        let many = p(&format!("/x/{}b", "*a".repeat(12)));
        assert!(!many.matches_exactly(&Path::new("/x").join(&name)));
        assert!(many.matches_exactly(&Path::new("/x").join(format!("{name}b"))));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        let e = Pattern::new("/a/[b").map(|_| ()).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        assert!(Pattern::new("/").is_err());
    }
}
