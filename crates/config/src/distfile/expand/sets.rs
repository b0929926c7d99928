//! A `sources -> hosts` statement as a [`MirrorSet`]: its host list, its
//! `sendonly` and `receiveonly` hosts checked against that list, and where
//! each source lives on the hosts (the `install` destination applied).

use super::paths::join_under;
use super::{Expander, Use};
use crate::diag::Pos;
use crate::distfile::parse::{Command, ListExpr};
use crate::distfile::{Direction, HostRef, InstallOptions, MirrorPath, MirrorSet};
use std::collections::HashSet;
use std::path::PathBuf;

impl Expander<'_> {
    pub(super) fn mirror_set(
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

fn is_host_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
