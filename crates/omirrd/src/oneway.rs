//! What a change of direction needs at start-up: a host that only sent
//! some paths (`sendonly`) has not applied its peers' changes there, and
//! its cursors moved past them. When it stops being send-only there, it
//! asks every peer for everything again (the resolver drops what it has,
//! or has newer), so that those paths come back into line. Which paths
//! were send-only at the last start is kept in `<state-dir>/sendonly`.

use crate::plan::Plan;
use anyhow::{Context, Result};
use omirr_config::distfile::Direction;
use omirr_index::{Batch, Index};
use std::path::Path;

/// The file, in the state directory, that lists the paths this host only
/// sent at its last start, one a line.
pub const SENDONLY_FILE: &str = "sendonly";

/// The paths (as kept on this host) of the sets this host only sends.
pub fn sendonly_paths(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .config
        .sets_for(&plan.host)
        .filter(|s| s.direction(&plan.host) == Direction::SendOnly)
        .flat_map(|s| s.paths.iter().map(|p| p.target.display().to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Compares `now` (see [`sendonly_paths`]) with what `state_dir` says was
/// send-only at the last start; if this host no longer only sends one of
/// those paths, resets every peer's cursor, so that each sends its
/// changes again from the start. Then records `now`. Returns the paths
/// that are send-only no more.
pub fn heal_direction_change(
    state_dir: &Path,
    now: &[String],
    index: &Index,
) -> Result<Vec<String>> {
    let file = state_dir.join(SENDONLY_FILE);
    let before = match std::fs::read_to_string(&file) {
        Ok(text) => text.lines().map(str::to_string).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let ended: Vec<String> = before
        .iter()
        .filter(|p| !p.is_empty() && !now.contains(p))
        .cloned()
        .collect();
    if !ended.is_empty() {
        // First the cursors: a kill before the file is written resets
        // them again at the next start, which costs a re-read, no harm.
        let mut batch = Batch::new();
        for (peer, _) in index.cursors()? {
            batch.set_cursor(peer, 0);
        }
        if !batch.is_empty() {
            index.commit(&batch)?;
        }
    }
    if before != now {
        let mut text = now.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        omirr_open::secure::write_atomic(&file, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(ended)
}

/// SIGHUP: the directions change without a restart. Paths that become
/// send-only are added to what `state_dir` remembers (so that the next
/// start heals them if they are send-only no more); paths that are
/// send-only no more are returned: what was not applied there arrives
/// only after a restart, which resets the cursors.
pub fn on_reload(state_dir: &Path, before: &[String], now: &[String]) -> Result<Vec<String>> {
    let file = state_dir.join(SENDONLY_FILE);
    let added: Vec<&String> = now.iter().filter(|p| !before.contains(p)).collect();
    if !added.is_empty() {
        let mut kept: Vec<String> = match std::fs::read_to_string(&file) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        kept.extend(added.into_iter().cloned());
        kept.sort();
        kept.dedup();
        let text: String = kept.iter().map(|p| format!("{p}\n")).collect();
        omirr_open::secure::write_atomic(&file, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(before
        .iter()
        .filter(|p| !now.contains(p))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::HostId;

    #[test]
    fn cursors_start_over_once_a_path_is_no_longer_send_only() {
        let state = tempfile::tempdir().expect("tempdir");
        let index = Index::open(state.path()).expect("index");
        let peer = HostId::new("b");
        index.set_cursor(&peer, 42).expect("cursor");
        let www = vec!["/srv/www".to_string()];
        // First start, send-only: nothing to heal.
        assert!(heal_direction_change(state.path(), &www, &index)
            .expect("heal")
            .is_empty());
        assert_eq!(index.cursor(&peer).expect("cursor"), 42);
        // Still send-only: nothing either.
        assert!(heal_direction_change(state.path(), &www, &index)
            .expect("heal")
            .is_empty());
        assert_eq!(index.cursor(&peer).expect("cursor"), 42);
        // No longer: every cursor starts over, once.
        assert_eq!(
            heal_direction_change(state.path(), &[], &index).expect("heal"),
            www
        );
        assert_eq!(index.cursor(&peer).expect("cursor"), 0);
        index.set_cursor(&peer, 7).expect("cursor");
        assert!(heal_direction_change(state.path(), &[], &index)
            .expect("heal")
            .is_empty());
        assert_eq!(index.cursor(&peer).expect("cursor"), 7);
    }

    #[test]
    fn a_reload_that_makes_a_path_send_only_is_remembered_for_the_next_start() {
        let state = tempfile::tempdir().expect("tempdir");
        let index = Index::open(state.path()).expect("index");
        let peer = HostId::new("b");
        index.set_cursor(&peer, 42).expect("cursor");
        let www = vec!["/srv/www".to_string()];
        assert!(heal_direction_change(state.path(), &[], &index)
            .expect("start")
            .is_empty());
        // SIGHUP: send-only now; then SIGHUP back, which says what ended.
        assert!(on_reload(state.path(), &[], &www)
            .expect("reload")
            .is_empty());
        assert_eq!(on_reload(state.path(), &www, &[]).expect("reload"), www);
        // The next start heals it.
        assert_eq!(
            heal_direction_change(state.path(), &[], &index).expect("start"),
            www
        );
        assert_eq!(index.cursor(&peer).expect("cursor"), 0);
    }
}
