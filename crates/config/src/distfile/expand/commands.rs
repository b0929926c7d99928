//! The commands of a set, `install`, `except`, `except_pat`, `special`,
//! `cmdspecial`, `notify`, `sendonly` and `receiveonly`, as what the
//! set is made of ([`Commands`]).

use super::{EWord, Expander, Use};
use crate::distfile::parse::{Command, ListExpr};
use crate::distfile::{Direction, InstallOptions, PathMatch, Special};
use std::path::PathBuf;

impl Expander<'_> {
    // Over 100 lines: one arm per Distfile command, as the parser's
    // `command` has.
    pub(super) fn commands(
        &mut self,
        commands: &[Command],
        options: &mut InstallOptions,
    ) -> Commands {
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
}

/// What a set's commands make of it, for [`Expander::mirror_set`].
#[derive(Default)]
pub(super) struct Commands {
    pub(super) dest: Option<PathBuf>,
    pub(super) excludes: Vec<PathMatch>,
    pub(super) patterns: Vec<regex::bytes::Regex>,
    pub(super) specials: Vec<Special>,
    pub(super) notify: Vec<String>,
    /// `sendonly` and `receiveonly` commands, checked against the set's
    /// hosts once all are known.
    pub(super) one_way: Vec<(ListExpr, Direction)>,
}

/// regex's messages end with the line that says what is wrong.
fn last_line(s: &str) -> &str {
    let l = s.lines().last().unwrap_or(s).trim();
    l.strip_prefix("error: ").unwrap_or(l)
}
