//! `regauth man --out DIR` (hidden): write roff man pages for `regauth`, each subcommand, and the
//! `docker-credential-*` helpers.
//!
//! Owns: man-page generation for packaging (`packaging/deb/build.sh`). The helper pages describe
//! the credential-helper protocol verbs; the helpers' own behaviour lives in `regauth::backend`.

use anyhow::Context;
use clap::{Args, Command, CommandFactory};
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str = "Examples:
  regauth man --out target/assets/man && man -l target/assets/man/regauth.1";

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
        let cmd = helper_command(name, about).version(env!("CARGO_PKG_VERSION"));
        written += write_page(&cmd, Page::Helper, &a.out)?;
    }
    eprintln!("wrote {written} man pages to {}", a.out.display());
    Ok(0)
}

/// The page for `docker-credential-<name>`: the protocol verbs docker and GitLab Runner call.
/// The verbs are listed in an ACTIONS section rather than as subcommands, so the page points at
/// no `docker-credential-<name>-get(1)` that does not exist.
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
        .after_help(helper_examples(name))
}

const HELPER_ACTIONS: &[(&str, &str)] = &[
    (
        "get",
        "Read a server URL on stdin; print {\"ServerURL\",\"Username\",\"Secret\"} as JSON, or \
         \"credentials not found in native keychain\" and exit 1.",
    ),
    (
        "store",
        "Read {\"ServerURL\",\"Username\",\"Secret\"} JSON on stdin and store it.",
    ),
    (
        "erase",
        "Read a server URL on stdin and delete its credentials.",
    ),
    (
        "list",
        "Print {\"ServerURL\": \"Username\"} for every stored entry.",
    ),
    ("version", "Print the helper's version."),
];

fn helper_examples(name: &str) -> String {
    let store = match name {
        "file" | "keyring" => format!(
            "\n  # Store a login (what `docker login` does with credsStore \"{name}\")\n  \
             printf '%s' '{{\"ServerURL\":\"registry.example.com:5000\",\"Username\":\"my_username\",\"Secret\":\"'\"$PW\"'\"}}' \\\n    \
             | docker-credential-{name} store\n"
        ),
        _ => String::new(),
    };
    format!(
        "Examples:\n  # credsStore: every registry through this helper (~/.docker/config.json)\n  \
         {{\"credsStore\": \"{name}\"}}\n\n  # credHelpers: one registry through it\n  \
         {{\"credHelpers\": {{\"registry.example.com:5000\": \"{name}\"}}}}\n{store}\n  \
         # What docker would get\n  echo registry.example.com:5000 | docker-credential-{name} get"
    )
}

/// Writes `cmd` as `<prefix>.1` and every visible subcommand as `<prefix>-<sub>.1`.
fn write_tree(cmd: &Command, prefix: &str, out: &Path) -> anyhow::Result<usize> {
    let named = cmd.clone().name(prefix.to_owned());
    let mut n = write_page(&named, Page::Regauth, out)?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        n += write_tree(sub, &format!("{prefix}-{}", sub.get_name()), out)?;
    }
    Ok(n)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Page {
    Regauth,
    Helper,
}

/// roff text: backslashes, and a leading `.` or `'` that would read as a request.
fn roff_escape(line: &str) -> String {
    let mut t = line.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        t.insert_str(0, "\\&");
    }
    t
}

fn section(out: &mut String, title: &str) {
    out.push_str(&format!(".SH \"{title}\"\n"));
}

/// Items as `.TP` tag/text pairs.
fn items(out: &mut String, items: &[(&str, &str)]) {
    for (tag, text) in items {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_escape(tag),
            roff_escape(text)
        ));
    }
}

fn verbatim(out: &mut String, text: &str) {
    out.push_str(".PP\n.nf\n");
    for line in text.lines() {
        out.push_str(&roff_escape(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
}

const REGAUTH_EXIT: &[(&str, &str)] = &[
    ("0", "Success."),
    (
        "1",
        "No answer: resolve found no credentials (the pull is anonymous); check found errors; \
         healthcheck found the proxy unhealthy; cache verify found bad entries.",
    ),
    (
        "2",
        "Bad input or usage, or a failure (printed as \"error:\" with one \"Caused by:\" block per cause).",
    ),
];

const HELPER_EXIT: &[(&str, &str)] = &[
    ("0", "The action succeeded."),
    (
        "1",
        "Not found (\"credentials not found in native keychain\") or an error; the message is on stdout, as the protocol requires.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "REGAUTH_LOG",
        "Log filter on stderr: a level (error, warn, info, debug, trace) applies to regauth's own \
         modules; a full tracing filter (\"debug,hyper=info\") is used as written. --log-level, \
         -v and -q override it. Helpers log only when it is set.",
    ),
    (
        "DOCKER_CONFIG",
        "Folder holding config.json for the docker profile (default ~/.docker). The gitlab \
         profile ignores it, as GitLab Runner does.",
    ),
    (
        "DOCKER_AUTH_CONFIG",
        "Credentials as JSON text. The docker profile reads only {\"auths\":{…}} with \"auth\" \
         entries; the gitlab profile reads a full config.json and, for a GitLab file-type \
         variable, the file whose path the variable holds.",
    ),
    (
        "HOME",
        "Locates ~/.docker/config.json, ~/.dockercfg and the regauth folders.",
    ),
    (
        "REGAUTH_CONFIG_DIR, XDG_CONFIG_HOME",
        "regauth's config folder (the file helper's store, the router's routes).",
    ),
    (
        "XDG_CACHE_HOME",
        "regauth's cache folder (the proxy cache).",
    ),
    (
        "CI_REGISTRY, CI_REGISTRY_USER, CI_REGISTRY_PASSWORD, CI_JOB_TOKEN, CI_DEPENDENCY_PROXY_SERVER",
        "GitLab CI job credentials (the gitlab profile and docker-credential-gitlab).",
    ),
    (
        "REGAUTH_<HOST>_USERNAME, REGAUTH_<HOST>_PASSWORD",
        "Credentials read by docker-credential-env.",
    ),
    (
        "AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "AWS credentials for ECR (docker-credential-ecr and the router), the AWS SDK's usual chain.",
    ),
    (
        "REGAUTH_KEYRING_STORE",
        "secret-service or keyutils: forces docker-credential-keyring's Linux store.",
    ),
    (
        "PATH",
        "Where docker-credential-<name> helpers are looked up.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "~/.docker/config.json",
        "The Docker config (auths, credsStore, credHelpers); $DOCKER_CONFIG/config.json for the docker profile.",
    ),
    (
        "~/.dockercfg",
        "The legacy Docker config, read when config.json does not exist.",
    ),
    (
        "~/.config/regauth/credentials.enc, credentials.key",
        "docker-credential-file's encrypted store and its key (mode 0600).",
    ),
    (
        "~/.cache/regauth/",
        "The proxy cache (verified blobs and manifests, tag entries).",
    ),
    (
        "/etc/regauth/proxy.env",
        "Settings for the packaged regauth-proxy.service.",
    ),
];

fn write_page(cmd: &Command, kind: Page, out: &Path) -> anyhow::Result<usize> {
    let path = out.join(format!("{}.1", cmd.get_name()));
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    let what = || format!("rendering the man page for {}", cmd.get_name());
    man.render_title(&mut buf).with_context(what)?;
    man.render_name_section(&mut buf).with_context(what)?;
    man.render_synopsis_section(&mut buf).with_context(what)?;
    man.render_description_section(&mut buf)
        .with_context(what)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf).with_context(what)?;
    }
    let mut extra = String::new();
    let subs: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| {
            (
                format!("{}-{}(1)", cmd.get_name(), s.get_name()),
                s.get_about().map(|a| a.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    if !subs.is_empty() {
        section(&mut extra, "SUBCOMMANDS");
        let v: Vec<(&str, &str)> = subs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        items(&mut extra, &v);
    }
    if kind == Page::Helper {
        section(&mut extra, "ACTIONS");
        items(&mut extra, HELPER_ACTIONS);
    }
    if let Some(ex) = cmd.get_after_help() {
        let text = ex.to_string();
        // The help text's own "Examples:" heading becomes the section title; a trailing
        // "Exit status:" paragraph is covered by EXIT STATUS.
        let body = text.strip_prefix("Examples:\n").unwrap_or(&text);
        let body = body.split("\nExit status:").next().unwrap_or(body);
        section(&mut extra, "EXAMPLES");
        verbatim(&mut extra, body.trim_end());
    }
    section(&mut extra, "EXIT STATUS");
    items(
        &mut extra,
        if kind == Page::Helper {
            HELPER_EXIT
        } else {
            REGAUTH_EXIT
        },
    );
    section(&mut extra, "ENVIRONMENT");
    items(&mut extra, ENVIRONMENT);
    section(&mut extra, "FILES");
    items(&mut extra, FILES);
    section(&mut extra, "SEE ALSO");
    let see: Vec<String> = std::iter::once("regauth(1)".to_owned())
        .chain(
            HELPERS
                .iter()
                .map(|(n, _)| format!("docker-credential-{n}(1)")),
        )
        .filter(|p| !p.starts_with(&format!("{}(", cmd.get_name())))
        .collect();
    extra.push_str(&format!("{}\n", roff_escape(&see.join(", "))));
    buf.extend_from_slice(extra.as_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf).with_context(what)?;
    }
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    Ok(1)
}
