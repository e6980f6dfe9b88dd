//! The platform stores: choosing one ([`open`], [`StoreKind`]), its per-entry size limit
//! ([`chunk_limit`]) and [`StoreSlots`], the [`super::Slots`] over a keyring-core store.
//!
//! Owns: the Linux Secret Service / keyutils choice, macOS Keychain and Windows Credential Manager
//! set-up, and turning keyring-core errors into messages that name the store. Does not own: the
//! layout of values (see [`super::chunked`]).

use super::chunked::Slots;
use super::{
    CHUNK_ENV, INDEX_SERVICE, INDEX_USER, KeyringBackend, KeyringError, MIN_CHUNK, STORE_ENV,
    WINCRED_MAX_BLOB,
};
use crate::config::locations::Env;
use keyring_core::{CredentialStore, Entry, Error as KrError};
use std::sync::Arc;

/// [`Slots`] over a keyring-core store.
pub struct StoreSlots {
    pub(super) store: Arc<CredentialStore>,
    pub(super) name: &'static str,
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
