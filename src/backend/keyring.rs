//! The OS keyring backend (`docker-credential-keyring`), through keyring v4 (`keyring-core` + stores).
//!
//! Owns: choosing the platform store, the on-keyring layout of regauth credentials (one entry per
//! server URL, split into several entries where the platform limits a secret's size), and the index
//! entry that makes `list` work on stores that cannot enumerate.
//!
//! Does not own: the helper protocol (see [`crate::credhelper`]) or key normalisation — the server
//! URL is used exactly as the client sent it, like every docker-credential-helpers backend.
//!
//! ## Stores
//! | platform | store | notes |
//! |---|---|---|
//! | Linux, D-Bus session bus reachable | Secret Service (pure-Rust zbus; gnome-keyring, KeePassXC…) | persistent |
//! | Linux, no session bus | kernel keyutils (session keyring) | lost at reboot/logout; in a login shell's default `_uid_ses` keyring reads are denied: run under `keyctl session -` |
//! | macOS | login Keychain | |
//! | Windows | Credential Manager (generic credentials) | 2560-byte blob limit: secrets are chunked |
//!
//! `REGAUTH_KEYRING_STORE=secret-service|keyutils` forces a Linux store.
//!
//! ## Layout
//! Every logical value (a credential, or the index) is a JSON document written as one or more
//! entries. Entry 0 has service [`SERVICE`] and user = the server URL; entry `i > 0` has service
//! `"{SERVICE}#<i>"`. Each entry holds `regauth:<i>/<n>:` followed by its share of the bytes, so a
//! reader knows how many entries to fetch and notices a torn write. Chunks are written before
//! entry 0, so a reader never sees a header pointing at chunks that were never written.
//!
//! This is not the schema of Docker's `docker-credential-secretservice` (`io.docker.Credentials`):
//! the two helpers coexist in one keyring but do not read each other's items.

use crate::config::locations::Env;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::secret::Secret;
use keyring_core::{CredentialStore, Entry, Error as KrError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Keyring "service" of regauth's credential entries.
pub const SERVICE: &str = "regauth-docker-credentials";
/// Keyring "service" of the index entry (user [`INDEX_USER`]).
pub const INDEX_SERVICE: &str = "regauth-docker-credentials-index";
const INDEX_USER: &str = "index";
/// Windows' `CRED_MAX_CREDENTIAL_BLOB_SIZE`.
pub const WINCRED_MAX_BLOB: usize = 2560;
/// Env var choosing the Linux store.
pub const STORE_ENV: &str = "REGAUTH_KEYRING_STORE";
/// Env var lowering the per-entry size (tests use it to exercise chunking on Linux).
pub const CHUNK_ENV: &str = "REGAUTH_KEYRING_CHUNK_BYTES";
/// Smallest accepted chunk size: the header must leave room for data.
const MIN_CHUNK: usize = 64;

/// A failure of the keyring backend. Messages name the store and entry, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{0}")]
    NoStore(String),
    #[error("{store}: {op} {what}: {detail}")]
    Store {
        store: &'static str,
        op: &'static str,
        what: String,
        detail: String,
    },
    #[error("{store}: {what} is damaged: {detail}")]
    Corrupt {
        store: &'static str,
        what: String,
        detail: String,
    },
    #[error("invalid {var}={value:?}: {reason}")]
    BadEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
}

impl From<KeyringError> for BackendError {
    fn from(e: KeyringError) -> Self {
        BackendError::Other(e.to_string())
    }
}

/// Where bytes are kept: one slot per (service, user). The keyring stores implement it through
/// [`StoreSlots`]; tests use a map.
pub trait Slots {
    /// A short store name for messages.
    fn name(&self) -> &'static str;
    /// The bytes in a slot, `None` when it does not exist.
    fn get(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, KeyringError>;
    fn set(&self, service: &str, user: &str, data: &[u8]) -> Result<(), KeyringError>;
    /// Removes a slot; absent is fine.
    fn delete(&self, service: &str, user: &str) -> Result<(), KeyringError>;
}

/// [`Slots`] over a keyring-core store.
pub struct StoreSlots {
    store: Arc<CredentialStore>,
    name: &'static str,
}

impl StoreSlots {
    fn entry(&self, op: &'static str, service: &str, user: &str) -> Result<Entry, KeyringError> {
        Entry::new_in_store(&self.store, service, user).map_err(|e| self.err(op, service, user, e))
    }

    fn err(&self, op: &'static str, service: &str, user: &str, e: KrError) -> KeyringError {
        KeyringError::Store {
            store: self.name,
            op,
            what: format!("entry {service:?}/{user:?}"),
            detail: describe(self.name, &e),
        }
    }
}

/// A keyring error in words, with the fix for the common headless failures.
fn describe(store: &str, e: &KrError) -> String {
    let base = e.to_string();
    match e {
        KrError::NoStorageAccess(_) if store == "keyutils" => format!(
            "{base} (the login session keyring denies reads; run the helper under `keyctl session -` \
             or start a D-Bus session with an unlocked Secret Service)"
        ),
        KrError::NoStorageAccess(_) => {
            format!("{base} (is the keyring locked? unlock it, e.g. gnome-keyring-daemon --unlock)")
        }
        KrError::TooLong(..) => format!(
            "{base} (set {CHUNK_ENV} below the platform limit to split values into smaller entries)"
        ),
        _ => base,
    }
}

impl Slots for StoreSlots {
    fn name(&self) -> &'static str {
        self.name
    }

    fn get(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        match self.entry("reading", service, user)?.get_secret() {
            Ok(b) => Ok(Some(b)),
            Err(KrError::NoEntry) => Ok(None),
            Err(e) => Err(self.err("reading", service, user, e)),
        }
    }

    fn set(&self, service: &str, user: &str, data: &[u8]) -> Result<(), KeyringError> {
        self.entry("writing", service, user)?
            .set_secret(data)
            .map_err(|e| self.err("writing", service, user, e))
    }

    fn delete(&self, service: &str, user: &str) -> Result<(), KeyringError> {
        match self.entry("deleting", service, user)?.delete_credential() {
            Ok(()) | Err(KrError::NoEntry) => Ok(()),
            Err(e) => Err(self.err("deleting", service, user, e)),
        }
    }
}

/// Values split into entries of at most `chunk` bytes each (header included).
pub struct Chunked<S> {
    slots: S,
    chunk: usize,
}

fn header(i: usize, n: usize) -> String {
    format!("regauth:{i}/{n}:")
}

/// Splits `raw` into `(i, n, data)`.
fn parse_piece(raw: &[u8]) -> Option<(usize, usize, &[u8])> {
    let rest = raw.strip_prefix(b"regauth:")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let (nums, data) = (
        std::str::from_utf8(&rest[..colon]).ok()?,
        &rest[colon + 1..],
    );
    let (i, n) = nums.split_once('/')?;
    Some((i.parse().ok()?, n.parse().ok()?, data))
}

impl<S: Slots> Chunked<S> {
    pub fn new(slots: S, chunk: usize) -> Self {
        Chunked {
            slots,
            chunk: chunk.max(MIN_CHUNK),
        }
    }

    fn service(base: &str, i: usize) -> String {
        if i == 0 {
            base.to_owned()
        } else {
            format!("{base}#{i}")
        }
    }

    fn corrupt(&self, what: String, detail: impl Into<String>) -> KeyringError {
        KeyringError::Corrupt {
            store: self.slots.name(),
            what,
            detail: detail.into(),
        }
    }

    /// How many entries the value at (base, user) spans now (0 when absent or unreadable).
    fn current_count(&self, base: &str, user: &str) -> Result<usize, KeyringError> {
        Ok(self
            .slots
            .get(base, user)?
            .and_then(|raw| parse_piece(&raw).map(|(_, n, _)| n))
            .unwrap_or(0))
    }

    /// Reads a whole value.
    pub fn read(&self, base: &str, user: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        let what = || format!("entry {base:?}/{user:?}");
        let Some(first) = self.slots.get(base, user)? else {
            return Ok(None);
        };
        let (i, n, data) = parse_piece(&first)
            .ok_or_else(|| self.corrupt(what(), "not written by regauth (no header)"))?;
        if i != 0 || n == 0 {
            return Err(self.corrupt(what(), format!("header says piece {i} of {n}")));
        }
        let mut out = data.to_vec();
        for k in 1..n {
            let raw = self
                .slots
                .get(&Self::service(base, k), user)?
                .ok_or_else(|| self.corrupt(what(), format!("piece {k} of {n} is missing")))?;
            match parse_piece(&raw) {
                Some((ki, kn, d)) if ki == k && kn == n => out.extend_from_slice(d),
                _ => return Err(self.corrupt(what(), format!("piece {k} of {n} has a bad header"))),
            }
        }
        Ok(Some(out))
    }

    /// Writes a whole value, replacing any previous one.
    pub fn write(&self, base: &str, user: &str, data: &[u8]) -> Result<(), KeyringError> {
        let old = self.current_count(base, user)?;
        // Header length grows with n; 40 bytes is plenty for two usize values.
        let room = self.chunk.saturating_sub(40).max(1);
        let n = data.len().div_ceil(room).max(1);
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(room).collect()
        };
        for (k, piece) in pieces.iter().enumerate().skip(1) {
            let mut v = header(k, n).into_bytes();
            v.extend_from_slice(piece);
            self.slots.set(&Self::service(base, k), user, &v)?;
        }
        let mut v = header(0, n).into_bytes();
        v.extend_from_slice(pieces[0]);
        self.slots.set(base, user, &v)?;
        for k in n..old {
            self.slots.delete(&Self::service(base, k), user)?;
        }
        Ok(())
    }

    /// Removes a value; returns whether it existed.
    pub fn delete(&self, base: &str, user: &str) -> Result<bool, KeyringError> {
        let Some(first) = self.slots.get(base, user)? else {
            return Ok(false);
        };
        let n = parse_piece(&first).map(|(_, n, _)| n).unwrap_or(1);
        self.slots.delete(base, user)?;
        for k in 1..n {
            self.slots.delete(&Self::service(base, k), user)?;
        }
        Ok(true)
    }
}

/// The keyring backend over any [`Slots`].
pub struct KeyringBackend<S> {
    inner: Chunked<S>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

impl<S: Slots> KeyringBackend<S> {
    /// A backend over these slots, splitting values above `chunk` bytes.
    pub fn with_slots(slots: S, chunk: usize) -> Self {
        KeyringBackend {
            inner: Chunked::new(slots, chunk),
        }
    }

    fn read_index(&self) -> Result<BTreeMap<String, String>, KeyringError> {
        match self.inner.read(INDEX_SERVICE, INDEX_USER)? {
            None => Ok(BTreeMap::new()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                self.inner
                    .corrupt("the regauth index entry".into(), format!("bad JSON: {e}"))
            }),
        }
    }

    fn write_index(&self, idx: &BTreeMap<String, String>) -> Result<(), KeyringError> {
        if idx.is_empty() {
            self.inner.delete(INDEX_SERVICE, INDEX_USER)?;
            return Ok(());
        }
        let bytes = serde_json::to_vec(idx).map_err(|e| {
            self.inner
                .corrupt("the regauth index entry".into(), e.to_string())
        })?;
        self.inner.write(INDEX_SERVICE, INDEX_USER, &bytes)
    }
}

impl<S: Slots> Backend for KeyringBackend<S> {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        let bytes = self
            .inner
            .read(SERVICE, server_url)?
            .ok_or(BackendError::NotFound)?;
        // serde_json's messages quote no input for these types, but say nothing of the content anyway.
        let s: Stored = serde_json::from_slice(&bytes).map_err(|_| {
            BackendError::from(self.inner.corrupt(
                format!("entry {SERVICE:?}/{server_url:?}"),
                "not a regauth credential document",
            ))
        })?;
        Ok(Login {
            username: s.username,
            secret: Secret::new(s.secret),
        })
    }

    fn store(&self, creds: &Credentials) -> Result<(), BackendError> {
        let doc = Stored {
            username: creds.username.clone(),
            secret: creds.secret.expose().to_owned(),
        };
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| BackendError::Other(format!("encoding credential: {e}")))?;
        self.inner.write(SERVICE, &creds.server_url, &bytes)?;
        let mut idx = self.read_index()?;
        if idx.get(&creds.server_url) != Some(&creds.username) {
            idx.insert(creds.server_url.clone(), creds.username.clone());
            self.write_index(&idx)?;
        }
        Ok(())
    }

    fn erase(&self, server_url: &str) -> Result<(), BackendError> {
        let existed = self.inner.delete(SERVICE, server_url)?;
        let mut idx = self.read_index()?;
        let indexed = idx.remove(server_url).is_some();
        if indexed {
            self.write_index(&idx)?;
        }
        if existed || indexed {
            Ok(())
        } else {
            Err(BackendError::NotFound)
        }
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        Ok(self.read_index()?)
    }
}

/// The backend the helper binary uses: opens the platform store on first use, so `--help` and
/// `version` work without a keyring, and reports an unusable store on every action.
///
/// The zbus Secret Service store is built on tokio: its blocking calls need a multi-threaded
/// runtime to drive the D-Bus connection, so every operation runs inside one (one worker thread).
pub struct LazyKeyring {
    env: Env,
    notices: std::sync::Mutex<Vec<String>>,
    cell:
        std::sync::OnceLock<Result<(tokio::runtime::Runtime, KeyringBackend<StoreSlots>), String>>,
}

impl LazyKeyring {
    pub fn new(env: Env) -> Self {
        LazyKeyring {
            env,
            notices: std::sync::Mutex::new(Vec::new()),
            cell: std::sync::OnceLock::new(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&KeyringBackend<StoreSlots>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let opened = self.cell.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| format!("starting the async runtime for the keyring: {e}"))?;
            let backend = {
                let _g = rt.enter();
                open(&self.env).map_err(|e| e.to_string())?
            };
            Ok((rt, backend))
        });
        match opened {
            Ok((rt, backend)) => {
                let _g = rt.enter();
                f(backend)
            }
            Err(e) => Err(BackendError::Other(e.clone())),
        }
    }
}

impl Backend for LazyKeyring {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        self.with(|b| b.get(server_url))
    }
    fn store(&self, creds: &Credentials) -> Result<(), BackendError> {
        let auto = self.env.get(STORE_ENV).is_none();
        self.with(|b| {
            // Said once per keyring: when the first entry goes into a kernel keyring we fell
            // back to (it is empty again after a reboot, and then it is said again).
            let first = auto && b.inner.slots.name() == "keyutils" && b.list()?.is_empty();
            b.store(creds)?;
            if first && let Ok(mut n) = self.notices.lock() {
                n.push(
                    "no D-Bus session bus, so this went into the kernel session keyring \
                     (keyutils), which is lost at reboot or logout; on a headless host use \
                     docker-credential-file for credentials that must survive a reboot, or set \
                     REGAUTH_KEYRING_STORE=keyutils to say this is intended"
                        .to_owned(),
                );
            }
            Ok(())
        })
    }
    fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
    fn erase(&self, server_url: &str) -> Result<(), BackendError> {
        self.with(|b| b.erase(server_url))
    }
    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        self.with(|b| b.list())
    }
}

/// Which platform store to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    SecretService,
    Keyutils,
    MacKeychain,
    WindowsCredentialManager,
}

impl StoreKind {
    /// Short name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::SecretService => "secret-service",
            StoreKind::Keyutils => "keyutils",
            StoreKind::MacKeychain => "macos-keychain",
            StoreKind::WindowsCredentialManager => "windows-credential-manager",
        }
    }
}

/// The per-entry byte limit for a store, lowered by [`CHUNK_ENV`] if set.
pub fn chunk_limit(kind: StoreKind, env: &Env) -> Result<usize, KeyringError> {
    let native = match kind {
        StoreKind::WindowsCredentialManager => WINCRED_MAX_BLOB,
        // keyutils "user" keys hold up to 32767 bytes.
        StoreKind::Keyutils => 32_767,
        _ => usize::MAX,
    };
    match env.get(CHUNK_ENV) {
        None => Ok(native),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= MIN_CHUNK => Ok(n.min(native)),
            _ => Err(KeyringError::BadEnv {
                var: CHUNK_ENV,
                value: v.to_owned(),
                reason: format!("expected a byte count of at least {MIN_CHUNK}"),
            }),
        },
    }
}

/// True when a D-Bus session bus looks reachable (address set, or the standard socket exists).
pub fn session_bus_present(env: &Env) -> bool {
    env.get("DBUS_SESSION_BUS_ADDRESS").is_some()
        || env
            .get("XDG_RUNTIME_DIR")
            .is_some_and(|d| std::path::Path::new(d).join("bus").exists())
}

/// Opens the platform keyring as a backend, following the rules in the module docs.
pub fn open(env: &Env) -> Result<KeyringBackend<StoreSlots>, KeyringError> {
    let (store, kind) = open_store(env)?;
    let chunk = chunk_limit(kind, env)?;
    Ok(KeyringBackend::with_slots(
        StoreSlots {
            store,
            name: kind.name(),
        },
        chunk,
    ))
}

#[cfg(target_os = "linux")]
fn open_store(env: &Env) -> Result<(Arc<CredentialStore>, StoreKind), KeyringError> {
    let secret_service = || -> Result<Arc<CredentialStore>, String> {
        zbus_secret_service_keyring_store::Store::new()
            .map(|s| s as Arc<CredentialStore>)
            .map_err(|e| e.to_string())
    };
    let keyutils = || -> Result<Arc<CredentialStore>, String> {
        let store: Arc<CredentialStore> =
            linux_keyutils_keyring_store::Store::new().map_err(|e| e.to_string())?;
        // Probe: a read that finds nothing proves the session keyring is usable.
        let probe = Entry::new_in_store(&store, INDEX_SERVICE, INDEX_USER)
            .and_then(|e| e.get_secret().map(|_| ()));
        match probe {
            Ok(()) | Err(KrError::NoEntry) => Ok(store),
            Err(e) => Err(describe("keyutils", &e)),
        }
    };
    match env.get(STORE_ENV) {
        Some("secret-service") => secret_service()
            .map(|s| (s, StoreKind::SecretService))
            .map_err(|e| {
                KeyringError::NoStore(format!(
                    "{STORE_ENV}=secret-service but the Secret Service is unreachable: {e}"
                ))
            }),
        Some("keyutils") => keyutils().map(|s| (s, StoreKind::Keyutils)).map_err(|e| {
            KeyringError::NoStore(format!(
                "{STORE_ENV}=keyutils but the kernel keyring is unusable: {e}"
            ))
        }),
        Some(other) => Err(KeyringError::BadEnv {
            var: STORE_ENV,
            value: other.to_owned(),
            reason: "expected secret-service or keyutils".into(),
        }),
        None => {
            let ss_err = if session_bus_present(env) {
                match secret_service() {
                    Ok(s) => return Ok((s, StoreKind::SecretService)),
                    Err(e) => format!("Secret Service: {e}"),
                }
            } else {
                "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS unset, no $XDG_RUNTIME_DIR/bus)"
                    .to_owned()
            };
            match keyutils() {
                Ok(s) => Ok((s, StoreKind::Keyutils)),
                Err(ku) => Err(KeyringError::NoStore(format!(
                    "no D-Bus session and no keyutils: {ss_err}; keyutils: {ku}"
                ))),
            }
        }
    }
}

#[cfg(target_os = "macos")]
fn open_store(_env: &Env) -> Result<(Arc<CredentialStore>, StoreKind), KeyringError> {
    apple_native_keyring_store::keychain::Store::new()
        .map(|s| (s as Arc<CredentialStore>, StoreKind::MacKeychain))
        .map_err(|e| KeyringError::NoStore(format!("macOS Keychain: {e}")))
}

#[cfg(target_os = "windows")]
fn open_store(_env: &Env) -> Result<(Arc<CredentialStore>, StoreKind), KeyringError> {
    windows_native_keyring_store::Store::new()
        .map(|s| {
            (
                s as Arc<CredentialStore>,
                StoreKind::WindowsCredentialManager,
            )
        })
        .map_err(|e| KeyringError::NoStore(format!("Windows Credential Manager: {e}")))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn open_store(_env: &Env) -> Result<(Arc<CredentialStore>, StoreKind), KeyringError> {
    Err(KeyringError::NoStore(
        "no OS keyring store is supported on this platform".into(),
    ))
}

#[cfg(test)]
mod tests {
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
}
