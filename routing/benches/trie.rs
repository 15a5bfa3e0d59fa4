//! The trie's floor lookups against a BTreeMap's (being written).
fn main() {}
