//! The keyring backend (being written).
