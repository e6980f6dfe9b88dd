//! The ecr backend (being written).
