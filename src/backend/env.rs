//! The env backend (being written).
