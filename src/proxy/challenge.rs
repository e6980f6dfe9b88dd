//! `WWW-Authenticate` parsing.
//!
//! Owns: turning a challenge header into a [`Challenge`] — Basic, or Bearer with `realm`,
//! `service` and any number of `scope`s (space-separated or repeated), quoted strings with `\\`
//! escapes. Kept apart from the token logic as distribution keeps `challenge/` apart: it is pure
//! parsing of outside input and is tested as such.
//!
//! Does not own: deciding whether a realm may be trusted or fetching tokens
//! ([`super::upstream_auth`]).

/// A parsed challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scopes: Vec<String>,
    },
}

/// Parses a `WWW-Authenticate` value; the first Basic or Bearer challenge wins.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let realm = params.iter().find(|(k, _)| k == "realm")?.1.clone();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    let scopes = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    Some(Challenge::Bearer {
        realm,
        service,
        scopes,
    })
}

/// `k=v, k="quoted, \"x\""` → pairs (keys lower-cased).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), val.trim().to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push repository:c:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scopes: vec![
                    "repository:a/b:pull,push".into(),
                    "repository:c:pull".into()
                ],
            })
        );
        assert_eq!(parse_challenge("Negotiate x"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None, "realm required");
    }
}
