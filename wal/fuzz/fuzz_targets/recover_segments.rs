//! Recovery over arbitrary segment bytes: a clean recovery or an error, never a panic; and
//! whatever is recovered has contiguous LSNs. The stable twin is the proptest
//! `recovery_of_arbitrary_bytes_never_panics` in `wal/tests/recovery.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = wal::sim::files_from_fuzz_input(data);
    let views: Vec<(u64, &[u8])> = files.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    let mut last: Option<u64> = None;
    let result = wal::recover(&views, &mut |r| {
        if let Some(l) = last {
            assert_eq!(r.lsn, l + 1, "recovered LSNs are contiguous");
        }
        last = Some(r.lsn);
    });
    if let Ok(recovered) = result {
        assert!(recovered.next_lsn >= 1);
    }
});
