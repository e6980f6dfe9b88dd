//! Wire types and encodings shared by the helper server and client.
//!
//! Owns: the `Credentials` message, Go-compatible JSON output ([`go_json`]), case-insensitive JSON
//! input ([`field_ci`]), and the exact sentinel strings clients match on.
//!
//! Does not own: process handling (see [`super::client`]) or dispatch (see [`super::server`]).

use crate::secret::Secret;
use serde_json::Value;

/// The exact "no credentials" answer. Clients compare all of (trimmed) stdout with it.
pub const NOT_FOUND: &str = "credentials not found in native keychain";
/// `store` without a server URL, and `get`/`erase` with empty input.
pub const MISSING_SERVER_URL: &str = "no credentials server URL";
/// `store` without a username.
pub const MISSING_USERNAME: &str = "no credentials username";
/// The username under which an identity (refresh) token travels.
pub const TOKEN_USERNAME: &str = "<token>";

/// One credential as the protocol carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub server_url: String,
    pub username: String,
    pub secret: Secret,
}

impl Credentials {
    /// True when the username is the identity-token marker `<token>`.
    pub fn is_identity_token(&self) -> bool {
        self.username == TOKEN_USERNAME
    }

    /// Decodes `{"ServerURL","Username","Secret"}` with Go's case-insensitive key matching; unknown
    /// keys are ignored and missing ones are empty, as Go's decoder does.
    pub fn from_json_value(v: &Value) -> Option<Credentials> {
        let obj = v.as_object()?;
        let s = |name: &str| {
            field_ci(obj, name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Some(Credentials {
            server_url: s("ServerURL"),
            username: s("Username"),
            secret: Secret::new(s("Secret")),
        })
    }

    /// The `get` answer: `{"ServerURL":…,"Username":…,"Secret":…}` plus a newline, as Go's
    /// `json.Encoder` writes it.
    pub fn to_go_json_line(&self) -> String {
        let mut out = String::from("{\"ServerURL\":");
        out.push_str(&go_json(&Value::from(self.server_url.as_str())));
        out.push_str(",\"Username\":");
        out.push_str(&go_json(&Value::from(self.username.as_str())));
        out.push_str(",\"Secret\":");
        out.push_str(&go_json(&Value::from(self.secret.expose())));
        out.push_str("}\n");
        out
    }
}

/// Looks a key up the way Go's `encoding/json` does: exact match first, then ASCII
/// case-insensitive.
pub fn field_ci<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Serialises a value the way Go's `json.Encoder` does (without the trailing newline): compact,
/// object keys sorted, and `<`, `>`, `&`, U+2028, U+2029 escaped as `\u003c`-style sequences.
///
/// serde_json never emits those characters outside string literals, so escaping them in the
/// whole output is exact.
pub fn go_json(v: &Value) -> String {
    // serde_json's Map is a BTreeMap here (no `preserve_order` feature), so keys come out sorted,
    // like Go's map encoding.
    let raw = serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned());
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Joins stdin the way the Go helpers read it: line by line with `bufio.Scanner`, lines
/// concatenated without separators (a trailing `\r` on each line dropped). Unlike Go there is no
/// 64 KiB line limit.
pub fn join_lines(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escapes_html_characters() {
        let c = Credentials {
            server_url: "https://r.example/v1/?a&b".into(),
            username: "<token>".into(),
            secret: Secret::new("s"),
        };
        assert_eq!(
            c.to_go_json_line(),
            "{\"ServerURL\":\"https://r.example/v1/?a\\u0026b\",\"Username\":\"\\u003ctoken\\u003e\",\"Secret\":\"s\"}\n"
        );
    }

    #[test]
    fn decodes_keys_case_insensitively() {
        let v: Value = serde_json::from_str(
            r#"{"username":"u","SECRET":"p","serveraddress":"x","serverurl":"h"}"#,
        )
        .unwrap();
        let c = Credentials::from_json_value(&v).unwrap();
        assert_eq!(c.username, "u");
        assert_eq!(c.secret.expose(), "p");
        assert_eq!(c.server_url, "h");
    }

    #[test]
    fn joins_lines_like_bufio_scanner() {
        assert_eq!(join_lines(b"a\r\nb\nc\n"), "abc");
        let long = "x".repeat(200_000);
        assert_eq!(join_lines(long.as_bytes()).len(), 200_000);
    }
}
