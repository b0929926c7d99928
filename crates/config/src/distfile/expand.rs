//! From statements to mirror sets: variables, braces, `~`, globs, set
//! algebra, install options and the commands of each set.
//!
//! Order of expansion for a word where a list is used:
//! 1. `$X`/`${NAME}` substitution; a word holding a list variable becomes
//!    one word per element (`/usr/lib/${EX}` -> `/usr/lib/a /usr/lib/b`);
//! 2. brace expansion `{a,b}` (not in `except_pat` or `notify`, where braces
//!    belong to regular expressions and addresses);
//! 3. in path lists, `~` and `~user`, then globbing of source paths against
//!    the host's root (`except` and `special` names keep their glob
//!    metacharacters and match paths as they appear);
//! 4. the set algebra `- + &` between the lists, left to right.
//!
//! A variable definition stores its words after step 1 and its own set
//! algebra, so braces and globs are expanded where the variable is used,
//! in the context of that use.

use super::lex::{self, Piece, RawWord};
use super::parse::{self, Command, ListExpr, SetOp, Statement};
use super::{
    install_option, Direction, HostRef, InstallOptions, MirrorPath, MirrorSet, OptionMeaning,
    ParseOptions, PathMatch, Pattern, Special, INSTALL_OPTIONS, MAX_CONFLICT_COPIES,
};
use crate::diag::{Diagnostic, Pos};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Brace expansion that would yield more names than this is refused.
const MAX_WORDS: usize = 100_000;

/// The most problems the expansion stage records. Each quotes what it is
/// about, and one word can expand to thousands, each with a problem per
/// character (`install -Z$D$D…`): found by the fuzz harness (crates/fuzz),
/// 65,536 diagnostics held 60 MB beside the expansion itself.
const MAX_DIAGNOSTICS: usize = 1000;

/// The longest path Linux opens (`PATH_MAX`, terminating NUL included):
/// a longer glob pattern matches nothing.
const PATH_MAX: usize = 4096;

/// What expansion may produce for a whole Distfile, in characters, each
/// name counting its length plus 2 (what holding it costs besides): about
/// 64 MiB in memory. [`MAX_WORDS`] bounds how many names one word expands
/// to, not how long they are: four `{a,b,c,d,e,f,g,h}` in a 7 KB word made
/// 4,096 names of 7 KB each, over 600 MB from a 7.5 KB Distfile (found by
/// the fuzz harness, crates/fuzz); and each variable holds its own copy.
const MAX_EXPANDED: usize = 4 << 20;

#[derive(Debug, Clone)]
struct EChar {
    c: char,
    /// Escaped characters are never metacharacters.
    escaped: bool,
    pos: Pos,
}

#[derive(Debug, Clone)]
struct EWord {
    chars: Vec<EChar>,
    pos: Pos,
}

impl EWord {
    fn text(&self) -> String {
        self.chars.iter().map(|c| c.c).collect()
    }

    /// A word whose every character is literal (results of globbing).
    fn literal(text: &str, pos: Pos) -> EWord {
        EWord {
            chars: text
                .chars()
                .map(|c| EChar {
                    c,
                    escaped: true,
                    pos,
                })
                .collect(),
            pos,
        }
    }

    fn has_glob_meta(&self) -> bool {
        self.chars
            .iter()
            .any(|c| !c.escaped && matches!(c.c, '*' | '?' | '['))
    }

    /// The word as a `glob` pattern: escaped metacharacters become
    /// one-character classes.
    fn glob_pattern(&self) -> String {
        let mut s = String::new();
        for c in &self.chars {
            if c.escaped && matches!(c.c, '*' | '?' | '[' | ']') {
                s.push('[');
                s.push(c.c);
                s.push(']');
            } else {
                s.push(c.c);
            }
        }
        s
    }
}

/// What a list is used for, which decides the expansion steps it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Variables only: definitions, `except_pat`, `notify`, options.
    Verbatim,
    /// Variables and braces: host lists.
    Names,
    /// Variables, braces and `~`; globs stay patterns: `except`,
    /// `special`, `install` destinations.
    PathPatterns,
    /// Variables, braces, `~` and globbing against the root: sources.
    Paths,
}

struct Expander<'a> {
    file: PathBuf,
    root: &'a Path,
    known_hosts: Option<&'a std::collections::BTreeSet<String>>,
    vars: HashMap<String, (Vec<EWord>, Pos)>,
    /// Names set with `-d`; the Distfile's own definitions of them are
    /// skipped.
    overridden: HashSet<String>,
    diags: Vec<Diagnostic>,
    /// How many of `diags` are errors: counting them at every statement
    /// made a Distfile of many bad statements quadratic (32,000 took 9 s;
    /// found by the fuzz harness, crates/fuzz).
    errors: usize,
    /// Home directories looked up for `~user`, by user (`""` for `~`):
    /// one lookup each, not one per word. A lookup reads the password
    /// database; `~user/` before a brace expansion to 20,000 names took a
    /// second (found by the fuzz harness, crates/fuzz).
    homes: HashMap<String, Result<String, String>>,
    /// Whether errors, and warnings, were left out (see [`MAX_DIAGNOSTICS`]).
    more_errors: bool,
    more_warnings: bool,
    /// What expansion has produced so far, against [`MAX_EXPANDED`].
    expanded: usize,
    /// Whether the error for going over [`MAX_EXPANDED`] was reported:
    /// once per Distfile is enough.
    over_budget: bool,
}

pub(crate) fn build(
    stmts: &[Statement],
    file: &Path,
    options: &ParseOptions,
) -> (Vec<MirrorSet>, Vec<Diagnostic>) {
    let mut ex = Expander {
        file: file.to_path_buf(),
        root: &options.root,
        known_hosts: options.known_hosts.as_ref(),
        vars: HashMap::new(),
        overridden: HashSet::new(),
        diags: Vec::new(),
        errors: 0,
        homes: HashMap::new(),
        more_errors: false,
        more_warnings: false,
        expanded: 0,
        over_budget: false,
    };
    for (name, value) in &options.defines {
        ex.define_from_command_line(name, value);
    }
    let mut sets = Vec::new();
    for stmt in stmts {
        match stmt {
            Statement::Define { name, pos, value } => {
                if ex.overridden.contains(name) {
                    continue;
                }
                let words = ex.eval(value, Use::Verbatim);
                if let Some((_, first)) = ex.vars.get(name) {
                    let msg = format!(
                        "variable '{name}' redefined (first defined at {first}); the new value applies from here on"
                    );
                    ex.warn(*pos, msg);
                }
                ex.vars.insert(name.clone(), (words, *pos));
            }
            Statement::Distribute {
                label,
                pos,
                sources,
                hosts,
                commands,
            } => {
                if let Some(set) = ex.mirror_set(label, *pos, sources, hosts, commands) {
                    sets.push(set);
                }
            }
            Statement::Stamp {
                pos,
                sources,
                stamp,
                commands,
                ..
            } => {
                // Still expanded, so that its mistakes are reported.
                ex.eval(sources, Use::Verbatim);
                ex.eval(stamp, Use::Verbatim);
                ex.commands(commands, &mut InstallOptions::default());
                ex.warn(
                    *pos,
                    "'::' timestamp statements have no meaning for a live mirror; omirrd ignores this statement",
                );
            }
        }
    }
    (sets, ex.diags)
}

impl Expander<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(Diagnostic::error(&self.file, pos, msg));
    }

    /// Records `d`, unless [`MAX_DIAGNOSTICS`] are recorded already:
    /// then one more says that more errors (or warnings) were left out.
    fn push(&mut self, d: Diagnostic) {
        let error = d.is_error();
        self.errors += usize::from(error);
        if self.diags.len() < MAX_DIAGNOSTICS {
            self.diags.push(d);
            return;
        }
        let said = if error {
            &mut self.more_errors
        } else {
            &mut self.more_warnings
        };
        if !*said {
            *said = true;
            let what = if error { "errors" } else { "warnings" };
            let msg = format!(
                "more {what} from here on are not shown: only the first {MAX_DIAGNOSTICS} problems of a Distfile are"
            );
            self.diags.push(if error {
                Diagnostic::error(&self.file, d.pos, msg)
            } else {
                Diagnostic::warning(&self.file, d.pos, msg)
            });
        }
    }

    fn warn(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(Diagnostic::warning(&self.file, pos, msg));
    }

    /// What expansion may still produce, in [`MAX_EXPANDED`]'s units.
    fn remaining(&self) -> usize {
        MAX_EXPANDED.saturating_sub(self.expanded)
    }

    /// Counts `size` units of expansion of `word` against
    /// [`MAX_EXPANDED`]: false, and an error (one per Distfile), when
    /// they do not fit.
    fn charge(&mut self, pos: Pos, size: usize, word: impl FnOnce() -> String) -> bool {
        if size <= self.remaining() {
            self.expanded += size;
            return true;
        }
        self.expanded = MAX_EXPANDED;
        if !self.over_budget {
            self.over_budget = true;
            self.error(
                pos,
                format!(
                    "expanding '{}' takes the Distfile's lists past {MAX_EXPANDED} characters in all: \
                     list fewer or shorter names",
                    word()
                ),
            );
        }
        false
    }

    fn define_from_command_line(&mut self, name: &str, value: &str) {
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

    /// Evaluates a list expression for a use: each operand is expanded,
    /// then the set algebra is applied left to right. The result has no
    /// repeated words.
    fn eval(&mut self, expr: &ListExpr, usage: Use) -> Vec<EWord> {
        let mut acc = self.operand(&expr.first, usage);
        for (op, words) in &expr.rest {
            let rhs = self.operand(words, usage);
            let rhs_texts: HashSet<String> = rhs.iter().map(EWord::text).collect();
            match op {
                SetOp::Difference => acc.retain(|w| !rhs_texts.contains(&w.text())),
                SetOp::Intersection => acc.retain(|w| rhs_texts.contains(&w.text())),
                SetOp::Union => acc.extend(rhs),
            }
        }
        let mut seen = HashSet::new();
        acc.retain(|w| seen.insert(w.text()));
        acc
    }

    fn operand(&mut self, words: &[RawWord], usage: Use) -> Vec<EWord> {
        let mut out = Vec::new();
        for w in words {
            for w in self.substitute(w) {
                let braced = match usage {
                    Use::Verbatim => vec![w],
                    _ => {
                        let pos = w.pos;
                        match expand_braces(w, self.remaining()) {
                            Ok(v) => {
                                let first = || v.first().map(EWord::text).unwrap_or_default();
                                if !self.charge(pos, expansion_size(&v), first) {
                                    continue;
                                }
                                v
                            }
                            Err((pos, msg)) => {
                                self.error(pos, msg);
                                continue;
                            }
                        }
                    }
                };
                for w in braced {
                    match usage {
                        Use::Verbatim | Use::Names => out.push(w),
                        Use::PathPatterns => out.extend(self.tilde(w)),
                        Use::Paths => {
                            if let Some(w) = self.tilde(w) {
                                out.extend(self.glob(w));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Step 1: variable substitution, distributing over list values.
    fn substitute(&mut self, word: &RawWord) -> Vec<EWord> {
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

    /// Step 3a: `~` and `~user` at the start of a path; a relative path is
    /// taken from the home directory, as in rdist.
    fn tilde(&mut self, w: EWord) -> Option<EWord> {
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
    fn glob(&mut self, w: EWord) -> Vec<EWord> {
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

    fn mirror_set(
        &mut self,
        label: &Option<String>,
        pos: Pos,
        sources: &ListExpr,
        hosts: &ListExpr,
        commands: &[Command],
    ) -> Option<MirrorSet> {
        let errors_before = self.error_count();
        let hosts = self.hosts(hosts);
        let mut sources_out = Vec::new();
        for w in self.eval(sources, Use::Paths) {
            if let Some(p) = self.path(&w) {
                if !w.has_glob_meta()
                    && std::fs::symlink_metadata(join_under(self.root, &p)).is_err()
                {
                    self.warn(
                        w.pos,
                        format!(
                            "'{}' does not exist under {}; it is mirrored once it appears on any host",
                            p.display(),
                            self.root.display()
                        ),
                    );
                }
                sources_out.push((p, w.pos));
            }
        }
        let mut options = InstallOptions::default();
        let cmds = self.commands(commands, &mut options);
        let paths = map_targets(&sources_out, cmds.dest.as_ref(), options.whole);
        let one_way = self.one_way(&hosts, &cmds.one_way, pos);
        if self.error_count() > errors_before {
            return None;
        }
        Some(MirrorSet {
            label: label.clone(),
            pos,
            hosts,
            paths,
            excludes: cmds.excludes,
            exclude_patterns: cmds.patterns,
            options,
            commands: cmds.specials,
            notify: cmds.notify,
            one_way,
        })
    }

    /// The hosts of `sendonly` and `receiveonly` commands, checked against
    /// the set's `hosts`: each must be one of them, and in one command
    /// only.
    fn one_way(
        &mut self,
        hosts: &[HostRef],
        commands: &[(ListExpr, Direction)],
        set_pos: Pos,
    ) -> Vec<(HostRef, Direction)> {
        let mut out: Vec<(HostRef, Direction)> = Vec::new();
        for (list, direction) in commands {
            let name = direction.name();
            for w in self.eval(list, Use::Names) {
                let text = w.text();
                let host = text.rsplit_once('@').map_or(text.as_str(), |(_, h)| h);
                let host = host.strip_suffix('+').unwrap_or(host);
                if !hosts.iter().any(|h| h.name == host) {
                    let listed: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                    self.error(
                        w.pos,
                        format!(
                            "{name} names '{host}', which is not a host of this set (line {}): expected one of {}",
                            set_pos.line,
                            listed.join(", ")
                        ),
                    );
                    continue;
                }
                match out.iter().find(|(h, _)| h.name == host) {
                    Some((first, d)) if d != direction => {
                        let msg = format!(
                            "host '{host}' is both {} (line {}) and {name} (line {}): a host of a set is one or the other",
                            d.name(),
                            first.pos.line,
                            w.pos.line
                        );
                        self.error(w.pos, msg);
                    }
                    Some(_) => {}
                    None => out.push((
                        HostRef {
                            name: host.to_string(),
                            login: None,
                            pos: w.pos,
                        },
                        *direction,
                    )),
                }
            }
        }
        let receivers = out
            .iter()
            .filter(|(_, d)| *d == Direction::ReceiveOnly)
            .count();
        if !hosts.is_empty() && receivers == hosts.len() {
            self.warn(
                set_pos,
                "every host of this set is receiveonly: no host may change its paths, and local changes are undone everywhere",
            );
        }
        out
    }

    fn error_count(&self) -> usize {
        self.errors
    }

    fn hosts(&mut self, expr: &ListExpr) -> Vec<HostRef> {
        let errors_before = self.error_count();
        let mut out: Vec<HostRef> = Vec::new();
        // Looking each name up in `out` made a list of many hosts
        // quadratic: `h{1,…,9}` five times (59,049 names, 107 bytes) took
        // 6.5 s (found by the fuzz harness, crates/fuzz).
        let mut seen: HashSet<String> = HashSet::new();
        for w in self.eval(expr, Use::Names) {
            let text = w.text();
            let (login, host) = match text.rsplit_once('@') {
                Some((l, h)) => (Some(l.to_string()), h),
                None => (None, text.as_str()),
            };
            // rdist's `host+` (no NFS checks) means nothing here.
            let host = host.strip_suffix('+').unwrap_or(host);
            if !is_host_name(host) {
                self.error(
                    w.pos,
                    format!(
                        "invalid host name '{text}': expected [login@]host with letters, digits, '.', '-' or '_'"
                    ),
                );
                continue;
            }
            if self.known_hosts.is_some_and(|k| !k.contains(host)) {
                self.error(
                    w.pos,
                    format!(
                        "host '{host}' is not in the peers file: add a line 'NAME ADDRESS[:PORT] FINGERPRINT' for it"
                    ),
                );
                continue;
            }
            if seen.insert(host.to_string()) {
                out.push(HostRef {
                    name: host.to_string(),
                    login,
                    pos: w.pos,
                });
            }
        }
        // Over MAX_EXPANDED every list comes out empty: that error is
        // reported once already.
        if out.is_empty() && self.error_count() == errors_before && !self.over_budget {
            self.error(
                expr.pos,
                "empty host list: expected at least one host after '->'",
            );
        }
        out
    }

    /// A path from an expanded word: absolute, without `.` or repeated
    /// slashes, and without `..` (which would climb out of the root).
    fn path(&mut self, w: &EWord) -> Option<PathBuf> {
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

    fn path_match(&mut self, w: &EWord) -> Option<PathMatch> {
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

    // Over 100 lines: one arm per Distfile command, as the parser's
    // `command` has.
    fn commands(&mut self, commands: &[Command], options: &mut InstallOptions) -> Commands {
        let mut out = Commands::default();
        let mut dest_pos = None;
        for cmd in commands {
            match cmd {
                Command::Install {
                    pos,
                    options: words,
                    dest,
                } => {
                    for w in words {
                        for w in self.substitute(w) {
                            self.install_options(&w, options);
                        }
                    }
                    if let Some(dest) = dest {
                        let words = self.eval(dest, Use::PathPatterns);
                        if words.len() != 1 {
                            self.error(
                                dest.pos,
                                format!(
                                    "install takes one destination, found {} names",
                                    words.len()
                                ),
                            );
                            continue;
                        }
                        if words[0].has_glob_meta() {
                            self.error(
                                words[0].pos,
                                format!(
                                    "install destination '{}' is a pattern: expected one path (escape the character with '\\' if it is part of the name)",
                                    words[0].text()
                                ),
                            );
                            continue;
                        }
                        let Some(p) = self.path(&words[0]) else {
                            continue;
                        };
                        match (&out.dest, dest_pos) {
                            (Some(old), Some(at)) if *old != p => self.error(
                                *pos,
                                format!(
                                    "second install destination {} differs from {} given at {at}",
                                    p.display(),
                                    old.display()
                                ),
                            ),
                            _ => {
                                out.dest = Some(p);
                                dest_pos = Some(*pos);
                            }
                        }
                    }
                }
                Command::Except { names, .. } => {
                    for w in self.eval(names, Use::PathPatterns) {
                        if let Some(m) = self.path_match(&w) {
                            out.excludes.push(m);
                        }
                    }
                }
                Command::ExceptPat { patterns, .. } => {
                    for w in self.eval(patterns, Use::Verbatim) {
                        match regex::bytes::Regex::new(&w.text()) {
                            Ok(r) => out.patterns.push(r),
                            Err(e) => self.error(
                                w.pos,
                                format!(
                                    "invalid regular expression '{}': {}",
                                    w.text(),
                                    last_line(&e.to_string())
                                ),
                            ),
                        }
                    }
                }
                Command::Special {
                    pos,
                    names,
                    command,
                    once_per_batch,
                } => {
                    let mut matches = Vec::new();
                    if let Some(names) = names {
                        for w in self.eval(names, Use::PathPatterns) {
                            matches.extend(self.path_match(&w));
                        }
                    }
                    out.specials.push(Special {
                        names: matches,
                        command: command.clone(),
                        once_per_batch: *once_per_batch,
                        pos: *pos,
                    });
                }
                Command::Notify { addresses, .. } => {
                    out.notify
                        .extend(self.eval(addresses, Use::Verbatim).iter().map(EWord::text));
                }
                Command::OneWay { hosts, direction } => {
                    out.one_way.push((hosts.clone(), *direction))
                }
            }
        }
        out
    }

    /// Parses one option word: `-oNAME[=VALUE],...` or old-style flags such
    /// as `-Rw`.
    fn install_options(&mut self, w: &EWord, o: &mut InstallOptions) {
        let text = w.text();
        let Some(body) = text.strip_prefix('-') else {
            self.error(w.pos, format!("expected an install option, found '{text}'"));
            return;
        };
        let at_char = |i: usize| w.chars.get(i).map_or(w.pos, |c| c.pos);
        let Some(list) = body.strip_prefix('o') else {
            for (i, flag) in body.chars().enumerate() {
                let name = match flag {
                    'b' => "compare",
                    'R' => "remove",
                    'v' => "verify",
                    'w' => "whole",
                    'y' => "younger",
                    'h' => "follow",
                    'i' => "ignlnks",
                    _ => {
                        self.error(
                            at_char(i + 1),
                            format!(
                                "unknown install flag '-{flag}': expected -o OPTIONS or one of -b -h -i -R -v -w -y"
                            ),
                        );
                        continue;
                    }
                };
                self.install_option(name, None, at_char(i + 1), o);
            }
            return;
        };
        // Each character knows where it was written, also when `-o` and
        // the list were separate words.
        let mut col = 2;
        for item in list.split(',') {
            let at = at_char(col);
            col += item.chars().count() + 1;
            if item.is_empty() {
                self.error(at, "empty install option: expected a name between commas");
                continue;
            }
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            self.install_option(name, value, at, o);
        }
    }

    fn install_option(&mut self, name: &str, value: Option<&str>, at: Pos, o: &mut InstallOptions) {
        let flag: &mut bool = match name {
            "defowner" | "defgroup" => {
                let v = Some(value.filter(|v| !v.is_empty()).unwrap_or("bin").to_string());
                if name == "defowner" {
                    o.defowner = v;
                } else {
                    o.defgroup = v;
                }
                return;
            }
            "conflicts" => {
                let n = value.and_then(|v| v.parse::<u32>().ok());
                match n {
                    Some(n) if n <= MAX_CONFLICT_COPIES => o.conflicts = Some(n),
                    _ => self.error(
                        at,
                        format!(
                            "install option 'conflicts' needs a number of conflict copies to keep per file, 0 to {MAX_CONFLICT_COPIES}: conflicts=N (0 keeps none), found {}",
                            match value {
                                Some(v) => format!("'{v}'"),
                                None => "no value".to_string(),
                            }
                        ),
                    ),
                }
                return;
            }
            "chknfs" => &mut o.chknfs,
            "chkreadonly" => &mut o.chkreadonly,
            "chksym" => &mut o.chksym,
            "compare" => &mut o.compare,
            "follow" => &mut o.follow,
            "history" => &mut o.history,
            "ignlnks" => &mut o.ignlnks,
            "noacls" => &mut o.noacls,
            "nochkgroup" => &mut o.nochkgroup,
            "nochkmode" => &mut o.nochkmode,
            "nochkowner" => &mut o.nochkowner,
            "nodescend" => &mut o.nodescend,
            "noexec" => &mut o.noexec,
            "noxattrs" => &mut o.noxattrs,
            "numchkgroup" => &mut o.numchkgroup,
            "numchkowner" => &mut o.numchkowner,
            "quiet" => &mut o.quiet,
            "remove" => &mut o.remove,
            "savetargets" => &mut o.savetargets,
            "sparse" => &mut o.sparse,
            "updateperm" => &mut o.updateperm,
            "verify" => &mut o.verify,
            "whole" => &mut o.whole,
            "younger" => &mut o.younger,
            _ => {
                self.error(
                    at,
                    format!(
                        "unknown install option '{name}': expected one of {}",
                        INSTALL_OPTIONS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return;
            }
        };
        *flag = true;
        if value.is_some() {
            self.error(at, format!("install option '{name}' takes no value"));
        }
        if let Some(OptionMeaning::Refused(why)) = install_option(name) {
            self.error(at, format!("install option '{name}' is refused: {why}"));
        }
    }
}

#[derive(Default)]
struct Commands {
    dest: Option<PathBuf>,
    excludes: Vec<PathMatch>,
    patterns: Vec<regex::bytes::Regex>,
    specials: Vec<Special>,
    notify: Vec<String>,
    /// `sendonly` and `receiveonly` commands, checked against the set's
    /// hosts once all are known.
    one_way: Vec<(ListExpr, Direction)>,
}

/// Where each source lives on the hosts of the set: at `dest` for a single
/// source, under `dest` by its last name for several, or at `dest` plus its
/// whole name with `whole`.
fn map_targets(sources: &[(PathBuf, Pos)], dest: Option<&PathBuf>, whole: bool) -> Vec<MirrorPath> {
    sources
        .iter()
        .map(|(source, pos)| {
            let target = match dest {
                None => source.clone(),
                Some(d) if whole => d.join(source.strip_prefix("/").unwrap_or(source)),
                Some(d) if sources.len() == 1 => d.clone(),
                Some(d) => match source.file_name() {
                    Some(name) => d.join(name),
                    None => d.clone(),
                },
            };
            MirrorPath {
                source: source.clone(),
                target,
                pos: *pos,
            }
        })
        .collect()
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

/// What holding `words` costs against [`MAX_EXPANDED`].
fn expansion_size(words: &[EWord]) -> usize {
    words
        .iter()
        .fold(0usize, |n, w| n.saturating_add(w.chars.len() + 2))
}

/// Step 2: csh brace expansion. `{}` stays literal, as in csh. At most
/// [`MAX_WORDS`] names, and `budget` units of [`MAX_EXPANDED`] held at
/// any time.
fn expand_braces(w: EWord, budget: usize) -> Result<Vec<EWord>, (Pos, String)> {
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

fn is_host_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `path` (absolute, in the Distfile's namespace) on disk under `root`.
pub(crate) fn join_under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// regex's messages end with the line that says what is wrong.
fn last_line(s: &str) -> &str {
    let l = s.lines().last().unwrap_or(s).trim();
    l.strip_prefix("error: ").unwrap_or(l)
}

#[cfg(test)]
mod tests {
    use super::*;

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
