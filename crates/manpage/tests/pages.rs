//! The committed man pages (docs/man/) are what their Markdown sources
//! render to today, and groff renders them without a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_pages_are_not_stale() {
    let root = workspace();
    for (source, page) in omirr_manpage::PAGES {
        let rendered = omirr_manpage::render_file(&root.join(source), env!("CARGO_PKG_VERSION"))
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        let committed = std::fs::read_to_string(root.join(page)).unwrap_or_else(|e| {
            panic!(
                "cannot read {page}: {e}; run '{}'",
                omirr_manpage::REGENERATE
            )
        });
        assert!(
            committed == rendered,
            "{page} is stale against {source}; run '{}' and commit the result",
            omirr_manpage::REGENERATE
        );
    }
}

/// Whether a tool is present; outside CI a missing one skips the test, in
/// CI (`CI` set) it fails it, since .ci/run installs it.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !in_ci,
            "{tool} is not installed; CI must install it (.ci/run: apt-get install man-db groff-base)"
        );
        eprintln!("skipped: {tool} is not installed (apt-get install man-db groff-base)");
    }
    found
}

#[test]
fn groff_renders_the_pages_without_warnings() {
    if !have("groff") {
        return;
    }
    let root = workspace();
    for (_, page) in omirr_manpage::PAGES {
        let output = Command::new("groff")
            .args(["-t", "-man", "-Tutf8", "-ww", "-z"])
            .env("LC_ALL", "C.UTF-8")
            .arg(root.join(page))
            .output()
            .unwrap_or_else(|e| panic!("cannot run groff: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "groff -t -man -Tutf8 -ww -z {page}: {}\n{stderr}",
            output.status
        );
    }
}

#[test]
fn man_renders_the_pages() {
    if !have("man") {
        return;
    }
    let root = workspace();
    for ((_, page), heading) in omirr_manpage::PAGES
        .iter()
        .zip(["OMIRRD(8)", "OMIRRD.CONF(5)"])
    {
        let output = Command::new("man")
            .arg("-l")
            .arg(root.join(page))
            .env("MANWIDTH", "80")
            // A locale the machine may not have makes man warn on stderr.
            .env("LC_ALL", "C.UTF-8")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap_or_else(|e| panic!("cannot run man: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "man -l {page}: {}\n{stderr}",
            output.status
        );
        // The header, the sections and a table all came through.
        assert!(
            stdout.starts_with(heading),
            "man -l {page} printed:\n{stdout}"
        );
        for section in ["NAME", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                stdout.lines().any(|l| l == section),
                "man -l {page} has no {section} section:\n{stdout}"
            );
        }
    }
}
