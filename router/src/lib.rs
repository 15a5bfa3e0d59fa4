//! percore's router (being written).
