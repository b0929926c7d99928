//! `omirr-manpage`: writes the roff man pages (docs/man/) from their
//! Markdown sources (docs/*.md), or with `--check` only says which are
//! stale. See the crate documentation of `omirr_manpage`.

use anyhow::{bail, Context as _};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--root" => {
                root = args
                    .next()
                    .map(PathBuf::from)
                    .context("--root needs a directory: the workspace root")?
            }
            "-h" | "--help" => {
                println!(
                    "usage: omirr-manpage [--check] [--root DIR]\n\
                     Renders docs/omirrd.8.md and docs/omirrd.conf.5.md (under DIR, by default\n\
                     this workspace) into docs/man/omirrd.8 and docs/man/omirrd.conf.5.\n\
                     --check writes nothing and exits 1 if a committed page is stale."
                );
                return Ok(());
            }
            other => {
                bail!("unknown argument '{other}'; usage: omirr-manpage [--check] [--root DIR]")
            }
        }
    }
    let mut stale = Vec::new();
    for (source, page) in omirr_manpage::PAGES {
        let rendered = omirr_manpage::render_file(&root.join(source), env!("CARGO_PKG_VERSION"))
            .with_context(|| format!("cannot render {source}"))?;
        let target = root.join(page);
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if current == rendered {
            continue;
        }
        if check {
            stale.push(page);
        } else {
            std::fs::write(&target, rendered)
                .with_context(|| format!("cannot write {}", target.display()))?;
            println!("wrote {page}");
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale against their Markdown source: {}; run '{}'",
            stale.join(", "),
            omirr_manpage::REGENERATE
        );
    }
    Ok(())
}
