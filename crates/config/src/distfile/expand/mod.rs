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
//!
//! This module owns the pipeline: [`build`] over the statements, the
//! [`Expander`] with its diagnostics and the limits it keeps to
//! ([`MAX_WORDS`], [`MAX_EXPANDED`], [`MAX_DIAGNOSTICS`]), the expanded
//! word ([`EWord`]), what a list is used for ([`Use`]), and
//! `Expander::eval`, which runs the steps over one list. The steps, and
//! what is made of the words they give, are in the submodules:
//!
//! - `variables`: step 1, `$` substitution, and `-d NAME=VALUE`;
//! - `braces`: step 2, brace expansion;
//! - `paths`: step 3, `~` and globbing, and paths and path patterns
//!   from expanded words;
//! - `sets`: a `sources -> hosts` statement as a [`MirrorSet`]: its
//!   hosts, `sendonly`/`receiveonly` hosts and target paths;
//! - `commands`: a set's commands (`install`, `except`, `special`, ...);
//! - `options`: the options of `install`.

mod braces;
mod commands;
mod options;
mod paths;
mod sets;
mod variables;

use super::lex::RawWord;
use super::parse::{ListExpr, SetOp, Statement};
use super::{InstallOptions, MirrorSet, ParseOptions};
use crate::diag::{Diagnostic, Pos};
use braces::expand_braces;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Brace expansion that would yield more names than this is refused.
const MAX_WORDS: usize = 100_000;

/// The most problems the expansion stage records. Each quotes what it is
/// about, and one word can expand to thousands, each with a problem per
/// character (`install -Z$D$D…`): found by the fuzz harness (crates/fuzz),
/// 65,536 diagnostics held 60 MB beside the expansion itself.
const MAX_DIAGNOSTICS: usize = 1000;

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

    fn error_count(&self) -> usize {
        self.errors
    }
}

/// What holding `words` costs against [`MAX_EXPANDED`].
fn expansion_size(words: &[EWord]) -> usize {
    words
        .iter()
        .fold(0usize, |n, w| n.saturating_add(w.chars.len() + 2))
}
