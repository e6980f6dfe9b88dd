//! The router backend (being written).
