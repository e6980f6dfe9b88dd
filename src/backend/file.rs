//! The file backend (being written).
