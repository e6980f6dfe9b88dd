//! Image references, parsed with the docker grammar (distribution/reference `ParseNormalizedNamed`).
//!
//! Owns: splitting `[domain/]path[:tag][@digest]`, Docker Hub defaults (`docker.io`, `library/`),
//! `localhost`, `host:port` and IPv6 domains, tag and digest syntax, the lower-case rule for
//! paths, the 255-character name limit, and [`Target`] — telling an image from a bare registry
//! host on the command line.
//!
//! Does not own: GitLab Runner's looser normalisation, which never validates (see
//! [`crate::config::keys::gitlab_image_path`]).

use crate::config::keys::{DOCKER_HUB_DOMAIN, DOCKER_HUB_LEGACY_DOMAIN, convert_to_hostname};
use std::fmt;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry domain, `host[:port]`, e.g. `docker.io` or `registry.example.com:5000`.
    pub domain: String,
    /// Repository path, e.g. `library/ubuntu`.
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

/// Why a reference was refused. The message says what part is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("invalid reference format: {what} in {reference:?}")]
    Invalid {
        reference: String,
        what: &'static str,
    },
    #[error("invalid reference format: repository name {0:?} is longer than 255 characters")]
    NameTooLong(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// Parses like `docker pull` does. A reference with neither tag nor digest gets no tag here;
    /// use [`Reference::tag_or_latest`].
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let invalid = |what| ReferenceError::Invalid {
            reference: s.to_owned(),
            what,
        };
        if is_hex64(s) {
            return Err(ReferenceError::HexName(s.to_owned()));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                if !valid_digest(d) {
                    return Err(invalid(
                        "bad digest (expected algorithm:hex, sha256 with 64 lowercase hex digits)",
                    ));
                }
                (n, Some(d.to_owned()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(c) if last_slash.is_none_or(|sl| c > sl) => {
                (&name_tag[..c], Some(name_tag[c + 1..].to_owned()))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(invalid(
                "bad tag (expected [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})",
            ));
        }
        let (domain, remainder) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(invalid("bad registry host"));
        }
        if remainder.is_empty() {
            return Err(invalid("empty repository path"));
        }
        if remainder.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(remainder));
        }
        if !remainder.split('/').all(valid_path_component) {
            return Err(invalid(
                "bad repository path (components are [a-z0-9] separated by '.', '_', '__' or '-')",
            ));
        }
        let full = format!("{domain}/{remainder}");
        if name.len() > 255 || full.len() > 255 {
            return Err(ReferenceError::NameTooLong(full));
        }
        Ok(Reference {
            domain,
            path: remainder,
            tag,
            digest,
        })
    }

    /// The tag, `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// `domain/path` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

/// distribution/reference `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == DOCKER_HUB_LEGACY_DOMAIN {
        domain = DOCKER_HUB_DOMAIN.to_owned();
    }
    if domain == DOCKER_HUB_DOMAIN && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `algorithm:encoded`; sha256 needs exactly 64 lowercase hex digits, sha512 128.
pub fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = !alg.is_empty()
        && alg.starts_with(|c: char| c.is_ascii_lowercase())
        && alg.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '_' | '-')
        });
    let hex_ok = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    alg_ok
        && hex_ok
        && match alg {
            "sha256" => hex.len() == 64,
            "sha512" => hex.len() == 128,
            _ => hex.len() >= 32,
        }
}

/// A repository path as the distribution spec allows it: `/`-separated lower-case components
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`), at most 255 characters.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_path_component)
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `host[:port]` or `[ipv6][:port]`, host labels `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`.
pub fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((h, tail)) = rest.split_once(']') else {
            return false;
        };
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        match tail {
            "" => return true,
            t => match t.strip_prefix(':') {
                Some(p) => ("ipv6", p),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (d, ""),
        }
    };
    let port_ok = port.is_empty() && !d.ends_with(':')
        || (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

/// What the user named on the command line: an image, or a registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Image {
        /// As typed (GitLab Runner normalises this string itself).
        raw: String,
        /// As parsed by the docker grammar.
        reference: Reference,
    },
    /// A registry `host[:port]` (URLs are reduced with `ConvertToHostname`).
    Host(String),
}

impl Target {
    /// Tells an image from a registry host the way a user means it (see [`Target::looks_like_host`]):
    /// a URL is a host (reduced with `ConvertToHostname`); a single segment without `/` or `@` is
    /// a host when [`Target::looks_like_host`] says so; anything else is an image. So
    /// `ruby:2.6`, `redis:latest` and `ubuntu` are Docker Hub images, while
    /// `registry.example.com:5000`, `localhost:5000` and `[::1]:5000` are registries.
    ///
    /// Why this rule: it is docker's own domain rule (distribution/reference `splitDockerDomain`:
    /// a first segment with a `.` or a port, or `localhost`, is a domain) applied to the part before
    /// the `:`, which is the only way a bare `name:tag` and a bare `host:port` differ. A host
    /// without a dot (`myreg:5000`) is therefore an image, as in `docker pull myreg:5000`; use
    /// [`Target::host`] (`--host`) for it.
    pub fn parse(s: &str) -> Result<Target, ReferenceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.contains("://") || Target::looks_like_host(s) {
            return Target::host(s);
        }
        Target::image(s)
    }

    /// Forces a registry `host[:port]` (`--host`): a URL is reduced with `ConvertToHostname`;
    /// anything else must be a valid `host[:port]` or `[v6][:port]`, without path, tag or digest.
    pub fn host(s: &str) -> Result<Target, ReferenceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.contains("://") {
            return Ok(Target::Host(convert_to_hostname(s)));
        }
        if s.contains(['/', '@']) || !valid_domain(s) {
            return Err(ReferenceError::Invalid {
                reference: s.to_owned(),
                what: "bad registry host (expected host[:port] or [ipv6][:port])",
            });
        }
        Ok(Target::Host(s.to_owned()))
    }

    /// Forces an image reference (`--image`), parsed with the docker grammar.
    pub fn image(s: &str) -> Result<Target, ReferenceError> {
        let s = s.trim();
        Ok(Target::Image {
            raw: s.to_owned(),
            reference: Reference::parse(s)?,
        })
    }

    /// True when a command-line argument without `://` names a registry rather than an image: a
    /// single segment (no `/`, no `@`) whose part before the first `:` is a domain by docker's
    /// rule — it holds a `.` (which covers IPv4 addresses), is `localhost`, or is a bracketed IPv6
    /// address.
    pub fn looks_like_host(s: &str) -> bool {
        if s.contains(['/', '@']) {
            return false;
        }
        if s.starts_with('[') {
            return true;
        }
        let before_colon = s.split_once(':').map_or(s, |(h, _)| h);
        before_colon.contains('.') || before_colon == "localhost"
    }

    /// The registry `host[:port]` (docker's reference domain).
    pub fn domain(&self) -> &str {
        match self {
            Target::Image { reference, .. } => &reference.domain,
            Target::Host(h) => h,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_and_domains() {
        let cases = [
            ("ubuntu", "docker.io", "library/ubuntu", None, None),
            (
                "user/ubuntu:22.04",
                "docker.io",
                "user/ubuntu",
                Some("22.04"),
                None,
            ),
            ("index.docker.io/user/x", "docker.io", "user/x", None, None),
            ("localhost/test", "localhost", "test", None, None),
            (
                "localhost:5000/a/b:c",
                "localhost:5000",
                "a/b",
                Some("c"),
                None,
            ),
            (
                "registry.example.com:5000/private/image:latest",
                "registry.example.com:5000",
                "private/image",
                Some("latest"),
                None,
            ),
            (
                "Registry.Example.com/x",
                "Registry.Example.com",
                "x",
                None,
                None,
            ),
            ("UPPER/x", "UPPER", "x", None, None),
            ("[::1]:5000/x", "[::1]:5000", "x", None, None),
        ];
        for (s, d, p, t, dg) in cases {
            let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(
                (
                    r.domain.as_str(),
                    r.path.as_str(),
                    r.tag.as_deref(),
                    r.digest.as_deref()
                ),
                (d, p, t, dg),
                "{s}"
            );
        }
        let dg = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("reg.example/x@{dg}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(dg.as_str()));
        assert_eq!(r.tag_or_latest(), None);
    }

    #[test]
    fn rejects_invalid() {
        let dg = "a".repeat(64);
        for s in [
            "",
            "Ubuntu/X",
            "reg.example/UPPER",
            "reg.example/a//b",
            "reg.example/-a",
            "reg.example/a:",
            "reg.example/a:-tag",
            "reg.example/a@sha256:abc",
            "reg.example:/a",
            "reg..example/a",
            dg.as_str(),
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?} should be rejected");
        }
        let long = format!("reg.example/{}", "a".repeat(250));
        assert!(matches!(
            Reference::parse(&long),
            Err(ReferenceError::NameTooLong(_))
        ));
    }

    #[test]
    fn target_host_or_image() {
        assert_eq!(
            Target::parse("registry.example.com:5000").unwrap(),
            Target::Host("registry.example.com:5000".into())
        );
        assert_eq!(
            Target::parse("https://index.docker.io/v1/").unwrap(),
            Target::Host("index.docker.io".into())
        );
        assert_eq!(
            Target::parse("localhost").unwrap(),
            Target::Host("localhost".into())
        );
        assert!(matches!(
            Target::parse("ubuntu").unwrap(),
            Target::Image { .. }
        ));
        assert_eq!(
            Target::parse("reg.example/a/b:1").unwrap().domain(),
            "reg.example"
        );
    }

    /// The "image or host" rule on every shape a user pastes: `name:tag` is a Docker Hub image
    /// unless the part before `:` is a domain by docker's rule.
    #[test]
    fn target_name_tag_is_an_image_unless_the_name_is_a_domain() {
        let hex = "d1dbaf9665fe8b2175198e49438092fdbcf4d8934200942b94425301b17853c7";
        let digested = format!("ruby:2.6.8@sha256:{hex}");
        for (s, path) in [
            ("ruby:2.6", "library/ruby"),
            ("postgres:11.7", "library/postgres"),
            ("postgresql:14.3", "library/postgresql"),
            ("redis:latest", "library/redis"),
            ("docker:20.10.16", "library/docker"),
            ("alpine:3", "library/alpine"),
            ("myreg:5000", "library/myreg"),
            ("ubuntu", "library/ubuntu"),
            (digested.as_str(), "library/ruby"),
            ("super/sql:experimental", "super/sql"),
        ] {
            match Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")) {
                Target::Image { raw, reference } => {
                    assert_eq!(raw, s);
                    assert_eq!(
                        (reference.domain.as_str(), reference.path.as_str()),
                        ("docker.io", path),
                        "{s}"
                    );
                }
                t => panic!("{s} must be an image, got {t:?}"),
            }
        }
        for s in [
            "myreg.example.com:5000",
            "registry.example.com",
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "10.0.0.1",
            "[::1]:5000",
            "[fe80::1]",
        ] {
            assert_eq!(Target::parse(s).unwrap(), Target::Host(s.into()), "{s}");
        }
        // A host-looking name that is no valid host is refused, not silently taken as an image.
        assert!(Target::parse("bad_host.example:5000").is_err());
        assert!(Target::parse("reg.example:port").is_err());
    }

    #[test]
    fn target_forced_forms() {
        assert_eq!(
            Target::host("myreg:5000").unwrap(),
            Target::Host("myreg:5000".into())
        );
        assert_eq!(
            Target::host("https://Reg.Example:5000/v2/").unwrap(),
            Target::Host("Reg.Example:5000".into())
        );
        for bad in [
            "",
            "reg.example/ns",
            "reg.example@sha256:x",
            "reg.example:",
            "a..b",
        ] {
            assert!(Target::host(bad).is_err(), "{bad:?}");
        }
        let t = Target::image("registry.example.com:5000").unwrap();
        assert_eq!(
            t.domain(),
            "docker.io",
            "forced: the image library/registry.example.com:5000"
        );
        assert!(Target::image("Ruby:2.6").is_err());
        assert_eq!(
            Target::image("registry.example.com:5000/namespace/image:tag")
                .unwrap()
                .domain(),
            "registry.example.com:5000"
        );
    }
}
