//! `regauth man --out DIR` (hidden): write roff man pages for `regauth`, each subcommand, and the
//! `docker-credential-*` helpers.
//!
//! Owns: man-page generation for packaging (`packaging/deb/build.sh`). The helper pages describe
//! the credential-helper protocol verbs; the helpers' own behaviour lives in `regauth::backend`.

use anyhow::Context;
use clap::{Args, Command, CommandFactory};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Every helper binary the project ships, with a one-line description of its backend.
pub const HELPERS: &[(&str, &str)] = &[
    ("file", "encrypted file credential store for headless hosts"),
    (
        "env",
        "read-only credentials from REGAUTH_<HOST>_USERNAME / _PASSWORD",
    ),
    (
        "gitlab",
        "read-only credentials from GitLab CI job variables",
    ),
    ("ecr", "AWS ECR authorization tokens with a shared cache"),
    ("keyring", "OS keyring (Secret Service, keyutils)"),
    (
        "regauth",
        "router: host pattern to backend or another helper",
    ),
];

pub fn run(a: ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = 0usize;
    let mut root = super::Cli::command();
    root.build();
    written += write_tree(&root, "regauth", &a.out)?;
    for (name, about) in HELPERS {
        written += write_page(&helper_command(name, about), &a.out)?;
    }
    eprintln!("wrote {written} man pages to {}", a.out.display());
    Ok(0)
}

/// The page for `docker-credential-<name>`: the protocol verbs docker and GitLab Runner call.
fn helper_command(name: &str, about: &str) -> Command {
    let about = format!("Docker credential helper: {about}");
    Command::new(format!("docker-credential-{name}"))
        .about(about.clone())
        .long_about(format!(
            "{about}.\n\nSpeaks the docker credential-helper protocol: the verb is the only \
             argument, input comes on stdin, output goes to stdout. Docker and GitLab Runner run it \
             when config.json names it in credsStore (\"{name}\") or credHelpers. Shared settings \
             live in $REGAUTH_CONFIG_DIR (else $XDG_CONFIG_HOME/regauth, else ~/.config/regauth)."
        ))
        .subcommand(Command::new("get").about(
            "Read a server URL on stdin; print {\"ServerURL\",\"Username\",\"Secret\"} as JSON, or \
             \"credentials not found in native keychain\" and exit 1",
        ))
        .subcommand(Command::new("store").about(
            "Read {\"ServerURL\",\"Username\",\"Secret\"} JSON on stdin and store it",
        ))
        .subcommand(Command::new("erase").about("Read a server URL on stdin and delete its credentials"))
        .subcommand(Command::new("list").about("Print {\"ServerURL\": \"Username\"} for every stored entry"))
        .subcommand(Command::new("version").about("Print the helper's version"))
}

/// Writes `cmd` as `<prefix>.1` and every visible subcommand as `<prefix>-<sub>.1`.
fn write_tree(cmd: &Command, prefix: &str, out: &Path) -> anyhow::Result<usize> {
    let named = cmd.clone().name(prefix.to_owned());
    let mut n = write_page(&named, out)?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        n += write_tree(sub, &format!("{prefix}-{}", sub.get_name()), out)?;
    }
    Ok(n)
}

fn write_page(cmd: &Command, out: &Path) -> anyhow::Result<usize> {
    let path = out.join(format!("{}.1", cmd.get_name()));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("rendering the man page for {}", cmd.get_name()))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    Ok(1)
}
