//! The file backend (`docker-credential-file`): an encrypted credential store for headless hosts.
//!
//! Owns: two files in the regauth config folder ([`crate::config::locations::regauth_config_dir`]:
//! `$REGAUTH_CONFIG_DIR`, else `$XDG_CONFIG_HOME/regauth`, else `~/.config/regauth`):
//!
//! | file | content | mode |
//! |---|---|---|
//! | `credentials.key` | `regauth-key-v1:` + base64 of a 32-byte random key, created on the first `store` | 0600 |
//! | `credentials.enc` | `regauth-credentials-v1\n` + 24-byte nonce + XChaCha20-Poly1305 ciphertext of the whole record set (server URLs, usernames and secrets, as JSON); the header is authenticated as associated data | 0600 |
//!
//! plus `.credentials.lock`, an advisory lock every writer holds across read–modify–write, so
//! parallel `docker login`s lose nothing. Every write is atomic ([`crate::fsutil::write_atomic`]):
//! readers see the old set or the new one. No server URL, username or secret is ever in plaintext
//! on disk. Files readable by group or others are refused, as are a damaged file and a wrong key,
//! each with an error naming the file — and never a secret.
//!
//! Lookup: `get` takes the exact server URL first, then any entry naming the same registry by
//! [`crate::config::keys::registry_host`] (so `https://reg:5000/v2/` finds `reg:5000`; Hub spellings are one).
//! `erase` removes the exact entry and every entry naming the same registry; erasing what is not
//! there succeeds, as Go's `docker-credential-secretservice` does (proved byte for byte in
//! `tests/helpers_conformance.rs`) — `docker logout` erases twice and must not warn.
//!
//! Does not own: key management beyond "a random key in a private file next to the data" — the
//! key file protects against stray copies of the store, not against the same user (use the keyring
//! helper for that). Nor the protocol ([`crate::credhelper`]).

use crate::config::keys::registry_host;
use crate::config::locations::{Env, regauth_config_dir};
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::fsutil::{ensure_private_dir, lock_exclusive, write_atomic};
use crate::secret::Secret;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The store file's name.
pub const STORE_FILE: &str = "credentials.enc";
/// The key file's name.
pub const KEY_FILE: &str = "credentials.key";
/// The lock file's name.
pub const LOCK_FILE: &str = ".credentials.lock";

const MAGIC: &[u8] = b"regauth-credentials-v1\n";
const KEY_PREFIX: &str = "regauth-key-v1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Why the file store failed. Every message names the file and never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error(
        "docker-credential-file: no folder for the credential store: set REGAUTH_CONFIG_DIR, XDG_CONFIG_HOME or HOME"
    )]
    NoDir,
    #[error("docker-credential-file: {action} {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        /// Printed, not returned from `source()`: each cause is shown once.
        cause: std::io::Error,
    },
    #[error(
        "docker-credential-file: {} has mode {mode:04o}; it must not be readable by group or others (chmod 600 {})",
        path.display(), path.display()
    )]
    BadPermissions { path: PathBuf, mode: u32 },
    #[error(
        "docker-credential-file: {} is not a regauth credential store ({why}); move it away to start a new one",
        path.display()
    )]
    Corrupt { path: PathBuf, why: &'static str },
    #[error(
        "docker-credential-file: {} cannot be decrypted with the key in {}: wrong key, or the file was changed or damaged",
        store.display(), key.display()
    )]
    WrongKey { store: PathBuf, key: PathBuf },
    #[error(
        "docker-credential-file: {} exists but its key file {} is missing; without the key it cannot be read",
        store.display(), key.display()
    )]
    MissingKey { store: PathBuf, key: PathBuf },
    #[error(
        "docker-credential-file: {} is not a regauth key file (expected one line `{KEY_PREFIX}<base64 of 32 bytes>`)",
        path.display()
    )]
    BadKey { path: PathBuf },
    #[error("docker-credential-file: the system random number generator failed: {0}")]
    Random(String),
}

impl From<FileStoreError> for BackendError {
    fn from(e: FileStoreError) -> Self {
        BackendError::Other(e.to_string())
    }
}

/// One stored credential.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    username: String,
    secret: Secret,
}

/// The encrypted file store.
#[derive(Clone, Debug)]
pub struct FileBackend {
    dir: Option<PathBuf>,
    /// Set when this process created the key (see [`Backend::take_notices`]).
    notices: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FileBackend {
    /// A store in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> FileBackend {
        FileBackend {
            dir: Some(dir.into()),
            notices: Default::default(),
        }
    }

    /// A store in the regauth config folder of `env`.
    pub fn new(env: &Env) -> FileBackend {
        FileBackend {
            dir: regauth_config_dir(env),
            notices: Default::default(),
        }
    }

    /// A store in the regauth config folder of the process environment.
    pub fn from_process() -> FileBackend {
        FileBackend::new(&Env::from_process())
    }

    fn dir(&self) -> Result<&Path, FileStoreError> {
        self.dir.as_deref().ok_or(FileStoreError::NoDir)
    }

    /// The store file's path (`None` when no folder could be determined).
    pub fn store_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(STORE_FILE))
    }

    /// The key file's path.
    pub fn key_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(KEY_FILE))
    }

    /// Reads the whole record set; `None` when there is no store file yet.
    fn load(&self) -> Result<Option<BTreeMap<String, Entry>>, FileStoreError> {
        let dir = self.dir()?;
        let store = dir.join(STORE_FILE);
        let Some(data) = read_private(&store)? else {
            return Ok(None);
        };
        let key_path = dir.join(KEY_FILE);
        let Some(key) = read_key(&key_path)? else {
            return Err(FileStoreError::MissingKey {
                store,
                key: key_path,
            });
        };
        let plain = decrypt(&store, &key_path, &key, &data)?;
        parse_records(&store, &plain).map(Some)
    }

    /// Writes the whole record set, creating the key if there is none yet. Call with the lock held.
    fn save(&self, records: &BTreeMap<String, Entry>) -> Result<(), FileStoreError> {
        let dir = self.dir()?;
        let key_path = dir.join(KEY_FILE);
        let key = match read_key(&key_path)? {
            Some(k) => k,
            None => {
                let key = chacha20poly1305::Key::try_generate()
                    .map_err(|e| FileStoreError::Random(e.to_string()))?;
                let text = format!(
                    "{KEY_PREFIX}{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key.as_slice())
                );
                write_atomic(&key_path, text.as_bytes(), 0o600).map_err(|source| {
                    FileStoreError::Io {
                        action: "writing key file",
                        path: key_path.clone(),
                        cause: source,
                    }
                })?;
                tracing::info!(path = %key_path.display(), "created a new key file");
                if let Ok(mut n) = self.notices.lock() {
                    n.push(format!(
                        "created the credential store {} with its key {} (mode 0600; it survives \
                         reboots; anyone who can read both files as this user can decrypt it)",
                        store_path_of(dir).display(),
                        key_path.display()
                    ));
                }
                key.to_vec()
            }
        };
        let plain = records_json(records);
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key).map_err(|_| FileStoreError::BadKey {
                path: key_path.clone(),
            })?;
        let nonce = XNonce::try_generate().map_err(|e| FileStoreError::Random(e.to_string()))?;
        let store = dir.join(STORE_FILE);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: MAGIC,
                },
            )
            .map_err(|_| FileStoreError::Corrupt {
                path: store.clone(),
                why: "encryption failed",
            })?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ct);
        write_atomic(&store, &out, 0o600).map_err(|source| FileStoreError::Io {
            action: "writing",
            path: store,
            cause: source,
        })
    }

    /// Runs a read–modify–write under the store's lock.
    fn modify<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Entry>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let dir = self.dir()?;
        ensure_private_dir(dir).map_err(|source| FileStoreError::Io {
            action: "creating folder",
            path: dir.to_owned(),
            cause: source,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let _lock = lock_exclusive(&lock_path).map_err(|source| FileStoreError::Io {
            action: "locking",
            path: lock_path,
            cause: source,
        })?;
        let mut records = self.load()?.unwrap_or_default();
        let out = f(&mut records)?;
        self.save(&records)?;
        Ok(out)
    }
}

fn store_path_of(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// Reads a file that must be private; `None` when it does not exist.
fn read_private(path: &Path) -> Result<Option<Vec<u8>>, FileStoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FileStoreError::Io {
                action: "reading",
                path: path.to_owned(),
                cause: source,
            });
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileStoreError::BadPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|source| FileStoreError::Io {
            action: "reading",
            path: path.to_owned(),
            cause: source,
        })
}

fn read_key(path: &Path) -> Result<Option<Vec<u8>>, FileStoreError> {
    let Some(data) = read_private(path)? else {
        return Ok(None);
    };
    let bad = || FileStoreError::BadKey {
        path: path.to_owned(),
    };
    let text = std::str::from_utf8(&data).map_err(|_| bad())?;
    let b64 = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    if key.len() != KEY_LEN {
        return Err(bad());
    }
    Ok(Some(key))
}

fn decrypt(
    store: &Path,
    key_path: &Path,
    key: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, FileStoreError> {
    let corrupt = |why| FileStoreError::Corrupt {
        path: store.to_owned(),
        why,
    };
    let rest = data.strip_prefix(MAGIC).ok_or(corrupt("bad header"))?;
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(corrupt("truncated"));
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| corrupt("bad nonce"))?;
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| FileStoreError::BadKey {
        path: key_path.to_owned(),
    })?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ct,
                aad: MAGIC,
            },
        )
        .map_err(|_| FileStoreError::WrongKey {
            store: store.to_owned(),
            key: key_path.to_owned(),
        })
}

/// The record set as JSON: `{"version":1,"entries":{"<server>":{"username":…,"secret":…}}}`.
fn records_json(records: &BTreeMap<String, Entry>) -> String {
    let entries: serde_json::Map<String, serde_json::Value> = records
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                serde_json::json!({"username": e.username, "secret": e.secret.expose()}),
            )
        })
        .collect();
    serde_json::json!({"version": 1, "entries": entries}).to_string()
}

/// Parses decrypted content. Errors never quote it.
fn parse_records(store: &Path, plain: &[u8]) -> Result<BTreeMap<String, Entry>, FileStoreError> {
    let corrupt = |why| FileStoreError::Corrupt {
        path: store.to_owned(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_slice(plain).map_err(|_| corrupt("decrypted content is not JSON"))?;
    if v.get("version").and_then(serde_json::Value::as_u64) != Some(1) {
        return Err(corrupt("unknown format version"));
    }
    let entries = v
        .get("entries")
        .and_then(serde_json::Value::as_object)
        .ok_or(corrupt("no entries object"))?;
    let mut out = BTreeMap::new();
    for (k, e) in entries {
        let field = |name| e.get(name).and_then(serde_json::Value::as_str);
        let (Some(u), Some(s)) = (field("username"), field("secret")) else {
            return Err(corrupt("an entry lacks username or secret"));
        };
        out.insert(
            k.clone(),
            Entry {
                username: u.to_owned(),
                secret: Secret::new(s),
            },
        );
    }
    Ok(out)
}

impl Backend for FileBackend {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        let records = self.load()?.unwrap_or_default();
        let entry = records.get(server_url).or_else(|| {
            let want = registry_host(server_url);
            records
                .iter()
                .find(|(k, _)| registry_host(k) == want)
                .map(|(_, e)| e)
        });
        tracing::debug!(server_url, found = entry.is_some(), "file get");
        entry
            .map(|e| Login {
                username: e.username.clone(),
                secret: e.secret.clone(),
            })
            .ok_or(BackendError::NotFound)
    }

    fn store(&self, creds: &Credentials) -> Result<(), BackendError> {
        tracing::debug!(server_url = %creds.server_url, "file store");
        self.modify(|r| {
            r.insert(
                creds.server_url.clone(),
                Entry {
                    username: creds.username.clone(),
                    secret: creds.secret.clone(),
                },
            );
            Ok(())
        })
    }

    fn erase(&self, server_url: &str) -> Result<(), BackendError> {
        tracing::debug!(server_url, "file erase");
        // Nothing stored at all: do not create files just to erase nothing.
        let want = registry_host(server_url);
        let present = |r: &BTreeMap<String, Entry>| {
            r.keys()
                .any(|k| k == server_url || registry_host(k) == want)
        };
        if !self.load()?.as_ref().is_some_and(present) {
            return Ok(());
        }
        self.modify(|r| {
            r.retain(|k, _| k != server_url && registry_host(k) != want);
            Ok(())
        })
    }

    fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        Ok(self
            .load()?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, e)| (k, e.username))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(url: &str, user: &str, secret: &str) -> Credentials {
        Credentials {
            server_url: url.into(),
            username: user.into(),
            secret: Secret::new(secret),
        }
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn round_trip_encrypted_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cfg");
        let b = FileBackend::in_dir(&d);
        assert!(matches!(b.get("reg:5000"), Err(BackendError::NotFound)));
        assert!(b.list().unwrap().is_empty());
        b.erase("reg:5000").unwrap();
        assert!(!d.exists(), "erasing nothing creates nothing");
        b.store(&creds(
            "reg.example.com:5000",
            "alice-user",
            "hunter2-secret",
        ))
        .unwrap();
        b.store(&creds(
            "https://index.docker.io/v1/",
            "hubuser",
            "hubsecret",
        ))
        .unwrap();
        let l = b.get("reg.example.com:5000").unwrap();
        assert_eq!(
            (l.username.as_str(), l.secret.expose()),
            ("alice-user", "hunter2-secret")
        );
        // Normalised fallbacks.
        assert_eq!(
            b.get("https://reg.example.com:5000/v2/").unwrap().username,
            "alice-user"
        );
        assert_eq!(b.get("docker.io").unwrap().username, "hubuser");
        assert!(matches!(
            b.get("reg.example.com"),
            Err(BackendError::NotFound)
        ));
        assert_eq!(b.list().unwrap().len(), 2);

        for f in [STORE_FILE, KEY_FILE] {
            let p = d.join(f);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for entry in std::fs::read_dir(&d).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            for plain in [
                "hunter2-secret",
                "alice-user",
                "reg.example.com",
                "hubuser",
                "index.docker.io",
            ] {
                assert!(!contains(&data, plain), "{plain} in plaintext");
            }
        }

        b.erase("docker.io").unwrap();
        assert!(matches!(
            b.get("https://index.docker.io/v1/"),
            Err(BackendError::NotFound)
        ));
        b.erase("docker.io").unwrap(); // idempotent
        assert_eq!(b.list().unwrap().len(), 1);
    }

    #[test]
    fn clear_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let b = FileBackend::in_dir(d);
        b.store(&creds("reg", "u", "hunter2")).unwrap();
        let store = d.join(STORE_FILE);
        let key = d.join(KEY_FILE);

        // Bad permissions.
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = b.get("reg").unwrap_err().to_string();
        assert!(
            e.contains(&store.display().to_string()) && e.contains("0644"),
            "{e}"
        );
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();

        // A flipped byte in the ciphertext.
        let good = std::fs::read(&store).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        write_atomic(&store, &bad, 0o600).unwrap();
        let e = b.get("reg").unwrap_err().to_string();
        assert!(
            e.contains("cannot be decrypted") && e.contains(&key.display().to_string()),
            "{e}"
        );

        // Wrong key.
        write_atomic(&store, &good, 0o600).unwrap();
        let good_key = std::fs::read(&key).unwrap();
        let other = format!(
            "{KEY_PREFIX}{}\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        write_atomic(&key, other.as_bytes(), 0o600).unwrap();
        let e = b.get("reg").unwrap_err().to_string();
        assert!(e.contains("wrong key"), "{e}");
        // A store with a wrong key is not overwritten by `store`.
        assert!(b.store(&creds("reg2", "u", "p")).is_err());
        assert_eq!(std::fs::read(&store).unwrap(), good);

        // Not a key file.
        write_atomic(&key, b"garbage", 0o600).unwrap();
        let e = b.get("reg").unwrap_err().to_string();
        assert!(
            e.contains("not a regauth key file") && e.contains(&key.display().to_string()),
            "{e}"
        );

        // Missing key.
        std::fs::remove_file(&key).unwrap();
        let e = b.get("reg").unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");
        assert!(
            b.store(&creds("reg2", "u", "p")).is_err(),
            "must not mint a new key over old data"
        );

        // Not a store at all.
        write_atomic(&key, &good_key, 0o600).unwrap();
        write_atomic(&store, b"{\"auths\":{}}", 0o600).unwrap();
        let e = b.get("reg").unwrap_err().to_string();
        assert!(
            e.contains("not a regauth credential store") && e.contains("bad header"),
            "{e}"
        );
        assert!(!e.contains("hunter2"));
    }
}
