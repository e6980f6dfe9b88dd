//! The gitlab backend (being written).
