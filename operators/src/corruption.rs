//! Test helper: every way of damaging an encoding a little, for the decoders of the
//! DSL's internal formats (join windows, foreign-key join messages, suppression and
//! regrouping changes, sliding windows). Each must answer with a value or an error,
//! never a panic: a corrupt store entry or internal-topic record must not take a
//! worker down. (The engine's decoders have a property test: weir-runtime's
//! `fuzz.rs`.)

use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Calls `f` with every truncation of `valid`, `valid` with each byte changed four
/// ways, `valid` with bytes after it, and 256 random byte strings.
pub(crate) fn each(valid: &[u8], mut f: impl FnMut(&[u8])) {
    for n in 0..valid.len() {
        f(&valid[..n]);
    }
    for i in 0..valid.len() {
        for x in [0x01, 0x7f, 0x80, 0xff] {
            let mut v = valid.to_vec();
            v[i] ^= x;
            f(&v);
        }
    }
    let mut longer = valid.to_vec();
    longer.extend_from_slice(&[0xff; 9]);
    f(&longer);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let random = proptest::collection::vec(any::<u8>(), 0..64);
    for _ in 0..256 {
        let b = random
            .new_tree(&mut runner)
            .expect("a random byte string")
            .current();
        f(&b);
    }
}
