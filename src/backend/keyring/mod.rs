//! The OS keyring backend (`docker-credential-keyring`), through keyring v4 (`keyring-core` + stores).
//!
//! Owns: choosing the platform store, the on-keyring layout of regauth credentials (one entry per
//! server URL, split into several entries where the platform limits a secret's size), and the index
//! entry that makes `list` work on stores that cannot enumerate.
//!
//! Does not own: the helper protocol (see [`crate::credhelper`]) or key normalisation — the server
//! URL is used exactly as the client sent it, like every docker-credential-helpers backend.
//!
//! Files: [`store`] (platform stores), [`chunked`] (the layout), this module (the backend and
//! its index), `tests.rs`.
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

pub mod chunked;
pub mod store;

pub use chunked::{Chunked, Slots};
pub use store::{StoreKind, StoreSlots, chunk_limit, open, session_bus_present};

use crate::config::locations::Env;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::secret::Secret;
use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests;
