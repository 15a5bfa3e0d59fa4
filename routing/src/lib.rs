//! The routing cache's trie (being written; see the crate's manifest).
