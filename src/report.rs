//! How an error chain is shown to a person: each cause once.
//!
//! Owns: walking [`std::error::Error::source`] and printing the chain either cargo's way
//! (`error: …` then one `Caused by:` block per cause, [`cargo_style`]) for the `regauth` binary's
//! single error printer, or joined on one line ([`one_line`]) for places that have only one line
//! (a helper's stdout answer, a warning, a `check` finding).
//!
//! Does not own: the messages themselves. The rule for error types is that a variant either
//! returns its cause from `source()` *or* prints it in its `Display`, never both. As a safety net
//! for types that still do both, a cause whose text the message before it already ends with is
//! skipped — so `listening on …: Address already in use (os error 98)` is not followed by the
//! same `Address already in use (os error 98)` again.

use std::error::Error;

/// The messages of `e` and its causes, outermost first, each cause once.
pub fn messages(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let repeated = out
            .last()
            .is_some_and(|prev| text.is_empty() || prev.ends_with(&text));
        if !repeated {
            out.push(text);
        }
        cur = err.source();
    }
    out
}

/// The chain on one line: `outer: cause: root cause`.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    messages(e).join(": ")
}

/// The chain as cargo prints it:
///
/// ```text
/// error: outer
///
/// Caused by:
///   cause
/// ```
pub fn cargo_style(e: &(dyn Error + 'static)) -> String {
    let mut msgs = messages(e).into_iter();
    let mut out = format!("error: {}", msgs.next().unwrap_or_default());
    for m in msgs {
        out.push_str("\n\nCaused by:");
        for line in m.lines() {
            out.push_str("\n  ");
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("listening on 127.0.0.1:5000: {source}")]
    struct Both {
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting the proxy")]
    struct Outer {
        #[source]
        source: Both,
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = Outer {
            source: Both { source: io },
        };
        assert_eq!(
            messages(&e),
            [
                "starting the proxy",
                "listening on 127.0.0.1:5000: Address already in use"
            ]
        );
        assert_eq!(
            one_line(&e),
            "starting the proxy: listening on 127.0.0.1:5000: Address already in use"
        );
        assert_eq!(
            cargo_style(&e),
            "error: starting the proxy\n\nCaused by:\n  listening on 127.0.0.1:5000: Address already in use"
        );
    }
}
