//! percore's meta (being written).
