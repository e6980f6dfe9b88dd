//! Tests of the keyring backend over an in-memory [`Slots`]: chunking, torn writes, the index,
//! limits and store choice.
use super::chunked::parse_piece;
use super::*;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
struct Mem {
    map: RefCell<HashMap<(String, String), Vec<u8>>>,
    limit: usize,
}

impl Slots for &Mem {
    fn name(&self) -> &'static str {
        "mem"
    }
    fn get(&self, s: &str, u: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        Ok(self.map.borrow().get(&(s.into(), u.into())).cloned())
    }
    fn set(&self, s: &str, u: &str, d: &[u8]) -> Result<(), KeyringError> {
        // Behave like wincred: refuse blobs over the limit.
        if d.len() > self.limit {
            return Err(KeyringError::Store {
                store: "mem",
                op: "writing",
                what: u.into(),
                detail: "too long".into(),
            });
        }
        self.map
            .borrow_mut()
            .insert((s.into(), u.into()), d.to_vec());
        Ok(())
    }
    fn delete(&self, s: &str, u: &str) -> Result<(), KeyringError> {
        self.map.borrow_mut().remove(&(s.into(), u.into()));
        Ok(())
    }
}

fn creds(url: &str, user: &str, secret: &str) -> Credentials {
    Credentials {
        server_url: url.into(),
        username: user.into(),
        secret: Secret::new(secret),
    }
}

#[test]
fn big_secret_is_chunked_under_the_wincred_limit_and_round_trips() {
    let mem = Mem {
        limit: WINCRED_MAX_BLOB,
        ..Default::default()
    };
    let b = KeyringBackend::with_slots(&mem, WINCRED_MAX_BLOB);
    let big: String = (0..10_240)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    b.store(&creds("https://r.example", "AWS", &big)).unwrap();
    let pieces = mem
        .map
        .borrow()
        .keys()
        .filter(|(_, u)| u == "https://r.example")
        .count();
    assert!(
        pieces >= 5,
        "10 KB in 2560-byte entries needs ≥5, got {pieces}"
    );
    let got = b.get("https://r.example").unwrap();
    assert_eq!(got.username, "AWS");
    assert_eq!(got.secret.expose(), big);
    // Shrinking removes the surplus chunks.
    b.store(&creds("https://r.example", "AWS", "small"))
        .unwrap();
    assert_eq!(mem.map.borrow().len(), 2, "one credential entry + index");
    assert_eq!(b.get("https://r.example").unwrap().secret.expose(), "small");
    b.store(&creds("https://r.example", "AWS", &big)).unwrap();
    b.erase("https://r.example").unwrap();
    assert!(
        mem.map.borrow().is_empty(),
        "erase removes every chunk and the index"
    );
    assert!(matches!(
        b.get("https://r.example"),
        Err(BackendError::NotFound)
    ));
}

#[test]
fn index_backs_list_and_erase_of_missing_is_not_found() {
    let mem = Mem {
        limit: usize::MAX,
        ..Default::default()
    };
    let b = KeyringBackend::with_slots(&mem, usize::MAX);
    assert!(b.list().unwrap().is_empty());
    b.store(&creds("a.example", "alice", "1")).unwrap();
    b.store(&creds("b.example:5000", "<token>", "2")).unwrap();
    let l = b.list().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l["b.example:5000"], "<token>");
    assert!(matches!(b.erase("c.example"), Err(BackendError::NotFound)));
    b.erase("a.example").unwrap();
    assert_eq!(
        b.list().unwrap().keys().collect::<Vec<_>>(),
        ["b.example:5000"]
    );
}

#[test]
fn torn_chunks_are_reported_without_the_secret() {
    let mem = Mem {
        limit: usize::MAX,
        ..Default::default()
    };
    let b = KeyringBackend::with_slots(&mem, 100);
    b.store(&creds("r", "u", &"s3cr3t".repeat(100))).unwrap();
    mem.map
        .borrow_mut()
        .remove(&(format!("{SERVICE}#2"), "r".to_owned()));
    let e = b.get("r").unwrap_err().to_string();
    assert!(e.contains("piece 2 of"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn piece_headers_parse() {
    assert_eq!(parse_piece(b"regauth:3/7:xy"), Some((3, 7, &b"xy"[..])));
    assert_eq!(parse_piece(b"regauth:0/1:"), Some((0, 1, &b""[..])));
    assert_eq!(parse_piece(b"{\"Username\":1}"), None);
}

#[test]
fn chunk_env_is_validated() {
    let env = Env::from_pairs([(CHUNK_ENV, "10")]);
    assert!(chunk_limit(StoreKind::SecretService, &env).is_err());
    let env = Env::from_pairs([(CHUNK_ENV, "5000")]);
    assert_eq!(
        chunk_limit(StoreKind::WindowsCredentialManager, &env).unwrap(),
        WINCRED_MAX_BLOB
    );
    assert_eq!(chunk_limit(StoreKind::SecretService, &env).unwrap(), 5000);
}
