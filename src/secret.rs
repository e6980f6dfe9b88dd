//! Secrets: the one type that holds a password, token or key in memory.
//!
//! Owns: redaction. `Debug` and `Display` of a [`Secret`] always print `<redacted>`, so a secret can
//! sit inside any error, log field or `{:?}` dump without leaking. Reading the value is an explicit,
//! greppable call: [`Secret::expose`].
//!
//! Does not own: zeroising memory (the value lives in an ordinary `String`; a process that can read
//! our memory can read the credential helper's answer too), nor serialisation — `Secret` has no
//! `Serialize` impl on purpose, so writing one to JSON needs an `expose()` at the call site.

use std::fmt;

/// The text printed in place of any secret.
pub const REDACTED: &str = "<redacted>";

/// A password, token or key. See the module docs for why it cannot be printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Every call site is a place where a secret leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Consumes the wrapper.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
