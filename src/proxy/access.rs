//! Which client identity may pull which repositories, and with whose upstream credentials.
//!
//! Owns: the `--access FILE` format (TOML, or JSON for a `.json` file), its validation, and
//! [`Access::decide`]. An entry names an identity — an htpasswd user, `"pass-through"` (any client
//! presenting registry credentials that are not an htpasswd user) or `"anonymous"` — the canonical
//! `registry/repository` patterns it may pull, and which credentials go upstream:
//!
//! ```toml
//! [[access]]
//! identity = "u1"
//! repositories = ["registry.example.com/team-a/*"]
//! credentials = "proxy"        # the proxy's resolved credentials (default for users, anonymous)
//!
//! [[access]]
//! identity = "pass-through"
//! repositories = ["registry.example.com/**"]
//! credentials = "client"       # the client's own (the only choice for pass-through)
//! ```
//!
//! A pattern is `REGISTRY/PATH`: `REGISTRY` is compared as the canonical registry (`docker.io` for
//! Docker Hub, `host:port`), exactly — no wildcard, so a pattern can never reach a registry by
//! accident; in `PATH`, `*` matches within one path segment and a final `/**` matches everything
//! below. Several entries for one identity add up; the first matching entry picks the
//! credentials.
//!
//! Why closed rules: `credentials = "proxy"` for `pass-through` would hand the proxy's credentials
//! to anyone who types any password, and `credentials = "client"` for an htpasswd user would send
//! the proxy's own password upstream; both are refused at start. Errors name the file and the
//! line, never a value.
//!
//! Without the file (and without `--pass-through`), every admitted client may pull everything with
//! the proxy's credentials: the single-tenant loopback set-up.
//!
//! Does not own: who the client is ([`super::client_auth`]) or what the upstream confirmed
//! ([`super::confirmations`]).

use super::client_auth::Identity;
use super::reach::Registry;
use std::path::{Path, PathBuf};

/// Problems with the access file.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("reading access file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("access file {path} line {line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// Whose credentials go upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Creds {
    /// The proxy's resolved credentials.
    Proxy,
    /// The client's own (pass-through).
    Client,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    access: Vec<toml::Spanned<EntryRaw>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    #[serde(default)]
    access: Vec<EntryRaw>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryRaw {
    identity: String,
    repositories: Vec<String>,
    credentials: Option<Creds>,
}

/// Which identities an entry is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Who {
    User(String),
    PassThrough,
    Anonymous,
}

/// One repository pattern.
#[derive(Clone, Debug)]
struct Pattern {
    /// `None`: every registry (only the implicit `--pass-through` entry).
    registry: Option<Registry>,
    path: String,
}

#[derive(Clone, Debug)]
struct Entry {
    who: Who,
    patterns: Vec<Pattern>,
    creds: Creds,
}

/// The access rules.
#[derive(Clone, Debug, Default)]
pub struct Access {
    entries: Vec<Entry>,
    /// Without a file: every admitted identity may pull everything with the proxy's credentials
    /// (pass-through identities with their own).
    open: bool,
}

/// `*` within a segment; a final `/**` (or a bare `**`) everything below. Iterative, so a
/// hostile repository name cannot make it recurse deeply.
fn glob(pattern: &str, name: &str) -> bool {
    if pattern == "**" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix("/**") {
        // `prefix` has no `**` (validated), so this recurses once.
        return name
            .match_indices('/')
            .any(|(i, _)| i + 1 < name.len() && glob(prefix, &name[..i]));
    }
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // A `*` stops at `/`: it matches within one segment.
                Some((sp, sn)) if n[sn] != b'/' => {
                    star = Some((sp, sn + 1));
                    pi = sp + 1;
                    ni = sn + 1;
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl Pattern {
    fn parse(s: &str) -> Result<Pattern, &'static str> {
        let (reg, path) = s
            .split_once('/')
            .ok_or("a repository pattern is REGISTRY/PATH (e.g. registry.example.com/team-a/*)")?;
        if reg.contains('*') {
            return Err("the registry part of a pattern cannot have wildcards");
        }
        let registry = Registry::parse(reg)
            .map_err(|_| "the registry part of a pattern is not a registry host[:port]")?;
        if path.is_empty() || path.starts_with('/') || path.contains("//") {
            return Err("the path part of a pattern is empty or has an empty segment");
        }
        let doubles = path.matches("**").count();
        if doubles > 1 || (doubles == 1 && !(path == "**" || path.ends_with("/**"))) {
            return Err("`**` is allowed only as the last segment");
        }
        Ok(Pattern {
            registry: Some(registry),
            path: path.to_owned(),
        })
    }

    fn matches(&self, registry: &Registry, repo: &str) -> bool {
        self.registry.as_ref().is_none_or(|r| r == registry) && glob(&self.path, repo)
    }
}

/// Line (1-based) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).unwrap_or(text).matches('\n').count() + 1
}

/// Words of the format itself, which a parser message may name.
const KNOWN: [&str; 6] = [
    "access",
    "identity",
    "repositories",
    "credentials",
    "proxy",
    "client",
];

/// A parser message without any value from the file (serde quotes what it complains about with
/// `"…"` or `` `…` ``; only the format's own words are kept).
fn without_values(msg: &str) -> String {
    let mut out = String::new();
    let mut quoted: Option<(char, String)> = None;
    for c in msg.lines().next().unwrap_or("").chars() {
        match &mut quoted {
            None if c == '"' || c == '`' => quoted = Some((c, String::new())),
            None => out.push(c),
            Some((q, inner)) if c == *q => {
                if KNOWN.contains(&inner.as_str()) {
                    out.push_str(&format!("`{inner}`"));
                } else {
                    out.push_str("(value)");
                }
                quoted = None;
            }
            Some((_, inner)) => inner.push(c),
        }
    }
    out.trim().to_owned()
}

impl Access {
    /// No file: the single-tenant default.
    pub fn open() -> Access {
        Access {
            entries: Vec::new(),
            open: true,
        }
    }

    /// Loads and validates `path` (`.json`: JSON, else TOML).
    pub fn load(path: &Path) -> Result<Access, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.to_owned(),
            source,
        })?;
        let at = |line: usize, why: String| AccessError::Line {
            path: path.to_owned(),
            line,
            why,
        };
        let raw: Vec<(usize, EntryRaw)> = if path.extension().is_some_and(|e| e == "json") {
            let f: FileJson = serde_json::from_str(&text)
                .map_err(|e| at(e.line(), without_values(&e.to_string())))?;
            // serde_json keeps no spans per entry: errors below name the entry's line by its
            // `"identity"` key, counted in order.
            let lines: Vec<usize> = text
                .match_indices("\"identity\"")
                .map(|(i, _)| line_of(&text, i))
                .collect();
            f.access
                .into_iter()
                .enumerate()
                .map(|(i, e)| (lines.get(i).copied().unwrap_or(1), e))
                .collect()
        } else {
            let f: FileToml = toml::from_str(&text).map_err(|e| {
                let line = e.span().map_or(1, |s| line_of(&text, s.start));
                at(line, without_values(e.message()))
            })?;
            f.access
                .into_iter()
                .map(|s| (line_of(&text, s.span().start), s.into_inner()))
                .collect()
        };
        let mut entries = Vec::new();
        for (line, e) in raw {
            entries.push(Access::entry(e).map_err(|why| at(line, why.to_owned()))?);
        }
        Ok(Access {
            entries,
            open: false,
        })
    }

    fn entry(e: EntryRaw) -> Result<Entry, &'static str> {
        let who = match e.identity.as_str() {
            "" => return Err("identity is empty"),
            "pass-through" => Who::PassThrough,
            "anonymous" => Who::Anonymous,
            u if u.contains(':') => return Err("identity cannot contain ':'"),
            u => Who::User(u.to_owned()),
        };
        let creds = match (&who, e.credentials) {
            (Who::PassThrough, None | Some(Creds::Client)) => Creds::Client,
            (Who::PassThrough, Some(Creds::Proxy)) => {
                return Err(
                    "pass-through identities cannot use the proxy's credentials (anyone typing any password would get them)",
                );
            }
            (_, Some(Creds::Client)) => {
                return Err(
                    "only pass-through identities have credentials of their own to send upstream",
                );
            }
            (_, _) => Creds::Proxy,
        };
        if e.repositories.is_empty() {
            return Err("repositories is empty");
        }
        let patterns = e
            .repositories
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry {
            who,
            patterns,
            creds,
        })
    }

    /// `--pass-through`: pass-through identities may pull from every registry in reach, with
    /// their own credentials.
    pub fn with_pass_through(mut self) -> Access {
        self.entries.push(Entry {
            who: Who::PassThrough,
            patterns: vec![Pattern {
                registry: None,
                path: "**".into(),
            }],
            creds: Creds::Client,
        });
        self
    }

    /// Are pass-through identities recognised at all?
    pub fn pass_through(&self) -> bool {
        self.entries.iter().any(|e| e.who == Who::PassThrough)
    }

    /// May anonymous clients pull anything?
    pub fn anonymous(&self) -> bool {
        self.open || self.entries.iter().any(|e| e.who == Who::Anonymous)
    }

    /// Whether `id` may pull `registry/repo`, and with whose credentials; `None`: denied.
    pub fn decide(&self, id: &Identity, registry: &Registry, repo: &str) -> Option<Creds> {
        let who = match id {
            Identity::User(u) => Who::User(u.clone()),
            Identity::PassThrough { .. } => Who::PassThrough,
            Identity::Anonymous => Who::Anonymous,
        };
        let listed = self
            .entries
            .iter()
            .filter(|e| e.who == who)
            .find(|e| e.patterns.iter().any(|p| p.matches(registry, repo)));
        match listed {
            Some(e) => Some(e.creds),
            None if self.open && who == Who::PassThrough => Some(Creds::Client),
            None if self.open => Some(Creds::Proxy),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn reg(s: &str) -> Registry {
        Registry::parse(s).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob("team-a/*", "team-a/app"));
        assert!(!glob("team-a/*", "team-a/app/sub"));
        assert!(!glob("team-a/*", "team-b/app"));
        assert!(!glob("team-a/*", "team-a"));
        assert!(glob("team-a/**", "team-a/app/sub"));
        assert!(!glob("team-a/**", "team-a"));
        assert!(!glob("team-a/**", "team-ab/x"));
        assert!(glob("*/app", "x/app"));
        assert!(glob("a*c", "abbc"));
        assert!(!glob("a*c", "ab/c"));
        assert!(glob("**", "any/thing"));
    }

    #[test]
    fn decides_per_identity_and_registry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.toml");
        std::fs::write(
            &p,
            "[[access]]\nidentity = \"u1\"\nrepositories = [\"127.0.0.1:5000/team-a/*\"]\n\n[[access]]\nidentity = \"pass-through\"\nrepositories = [\"127.0.0.1:5000/**\"]\n",
        )
        .unwrap();
        let a = Access::load(&p).unwrap();
        let r = reg("127.0.0.1:5000");
        let u1 = Identity::User("u1".into());
        assert_eq!(a.decide(&u1, &r, "team-a/app"), Some(Creds::Proxy));
        assert_eq!(a.decide(&u1, &r, "team-b/app"), None);
        assert_eq!(a.decide(&u1, &reg("127.0.0.1:5001"), "team-a/app"), None);
        assert_eq!(
            a.decide(&Identity::User("u2".into()), &r, "team-a/app"),
            None
        );
        assert_eq!(a.decide(&Identity::Anonymous, &r, "team-a/app"), None);
        let pt = Identity::PassThrough {
            user: "x".into(),
            credential: Secret::new("y"),
        };
        assert_eq!(a.decide(&pt, &r, "team-b/app"), Some(Creds::Client));
        assert!(a.pass_through() && !a.anonymous());
        let open = Access::open();
        assert_eq!(
            open.decide(&Identity::Anonymous, &r, "x"),
            Some(Creds::Proxy)
        );
    }

    #[test]
    fn errors_name_the_line_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.toml");
        for (text, line) in [
            (
                "[[access]]\nidentity = \"pass-through\"\nrepositories = [\"r.example/x\"]\ncredentials = \"proxy\"\n",
                1,
            ),
            (
                "\n\n[[access]]\nidentity = \"u\"\nrepositories = [\"nopath-secretvalue\"]\n",
                3,
            ),
            (
                "[[access]]\nidentity = \"u\"\nrepositories = [\"r.example/x\"]\ncredentials = \"secretvalue\"\n",
                4,
            ),
            (
                "[[access]]\nidentity = \"u\"\nrepos = [\"secretvalue\"]\n",
                3,
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Access::load(&p).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}:")), "{e}");
            assert!(e.contains("access.toml"), "{e}");
            assert!(!e.contains("secretvalue"), "{e}");
        }
        let j = dir.path().join("access.json");
        std::fs::write(&j, "{\"access\": [\n {\"identity\": \"u\", \"repositories\": [\"r.example/*\"]},\n {\"identity\": \"anonymous\", \"repositories\": [\"r.example/*\"], \"credentials\": \"client\"}]}").unwrap();
        let e = Access::load(&j).unwrap_err().to_string();
        assert!(e.contains("line 3:"), "{e}");
    }
}
