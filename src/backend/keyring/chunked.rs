//! The on-keyring layout: values split into `regauth:<i>/<n>:`-headed entries ([`Chunked`]) over
//! any [`Slots`] (one byte string per service and user).
//!
//! Owns: splitting, the write order (chunks before entry 0) and torn-write detection. Does not own:
//! which store the slots live in (see [`super::store`]).

use super::{KeyringError, MIN_CHUNK};

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

/// Values split into entries of at most `chunk` bytes each (header included).
pub struct Chunked<S> {
    pub(super) slots: S,
    pub(super) chunk: usize,
}

pub(super) fn header(i: usize, n: usize) -> String {
    format!("regauth:{i}/{n}:")
}

/// Splits `raw` into `(i, n, data)`.
pub(super) fn parse_piece(raw: &[u8]) -> Option<(usize, usize, &[u8])> {
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

    pub(super) fn corrupt(&self, what: String, detail: impl Into<String>) -> KeyringError {
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
