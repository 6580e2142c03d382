//! Random and corrupted bytes against every decoder of the engine: serdes, window and
//! session store keys, changelog checkpoints, global-store offset files and Kafka
//! commit metadata. Each must answer with a value or an error, never a panic (a
//! corrupt record, store entry or file must not take a worker down). The log's
//! record format has its own test next to it (`io/broker/batch.rs`).

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::serde::{
    BytesSerde, I32Serde, I64Serde, OptionSerde, Serde, StringSerde, U64Serde, UnitSerde,
};
use crate::state::window::{self, StoreType, WindowedSerde};

/// Random bytes, or a valid encoding cut short or with one byte changed.
pub(crate) fn corrupted(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let (cut, flip) = (valid.clone(), valid);
    prop_oneof![
        vec(any::<u8>(), 0..80),
        (0..=cut.len()).prop_map(move |n| cut[..n].to_vec()),
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(move |(i, x)| {
            let mut v = flip.clone();
            if !v.is_empty() {
                let i = i.index(v.len());
                v[i] ^= x;
            }
            v
        }),
    ]
}

fn deserialize_all(b: &[u8]) {
    let _ = Serde::<bytes::Bytes>::deserialize(&BytesSerde, Some(b));
    let _ = Serde::<Vec<u8>>::deserialize(&BytesSerde, Some(b));
    let _ = StringSerde.deserialize(Some(b));
    let _ = I32Serde.deserialize(Some(b));
    let _ = I64Serde.deserialize(Some(b));
    let _ = U64Serde.deserialize(Some(b));
    let _ = UnitSerde.deserialize(Some(b));
    let _ = OptionSerde(I64Serde).deserialize(Some(b));
    #[cfg(feature = "json")]
    let _ = Serde::<std::collections::BTreeMap<String, i64>>::deserialize(
        &crate::serde::JsonSerde::<std::collections::BTreeMap<String, i64>>::default(),
        Some(b),
    );
    let _ = WindowedSerde(Arc::new(StringSerde) as Arc<dyn Serde<String>>).deserialize(Some(b));
}

fn store_keys(b: &[u8]) {
    let window = StoreType::window(10, 100);
    let duplicates = StoreType::window_with_duplicates(0, 100);
    let session = StoreType::Session {
        retention_ms: 100,
        segment_ms: 60_000,
    };
    let versioned = StoreType::Versioned {
        history_ms: 100,
        segment_ms: 60_000,
    };
    let _ = window::split_key(b, 1);
    let _ = window::split_key(b, 2);
    let _ = window::stored_window(&window, b);
    let _ = window::stored_window(&duplicates, b);
    let _ = window::entry_time(&duplicates, b);
    let _ = window::stored_window(&session, b);
    let _ = window::entry_time(&window, b);
    let _ = window::entry_time(&session, b);
    let _ = window::entry_time(&versioned, b);
    let _ = window::entry_segment(b);
}

proptest! {
    #[test]
    fn serdes_answer_random_bytes_without_panicking(b in vec(any::<u8>(), 0..80)) {
        deserialize_all(&b);
    }

    #[test]
    fn windowed_keys_survive_corruption(
        b in corrupted(
            WindowedSerde(Arc::new(StringSerde) as Arc<dyn Serde<String>>)
                .serialize(&crate::Windowed {
                    key: "user-1".to_string(),
                    window: crate::Window::new(100, 200),
                })
                .unwrap()
                .unwrap()
                .to_vec(),
        )
    ) {
        deserialize_all(&b);
    }

    #[test]
    fn window_and_session_store_keys_survive_corruption(
        b in prop_oneof![
            corrupted(window::window_key(60_000, b"user-1", 123_456)),
            corrupted(window::session_key(60_000, b"user-1", crate::Window::new(5, 900))),
        ]
    ) {
        store_keys(&b);
    }

    #[test]
    fn checkpoint_and_offset_files_survive_corruption(
        b in prop_oneof![
            corrupted(b"123456".to_vec()),
            corrupted(b"0 17\n1 4\n2 99\n".to_vec()),
        ]
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(crate::state::changelog::checkpoint_path(dir.path()), &b).unwrap();
        let _ = crate::state::changelog::read_checkpoint(dir.path());
        std::fs::write(crate::state::global::offsets_path(dir.path()), &b).unwrap();
        let _ = crate::state::global::read_offsets(dir.path());
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn commit_metadata_survives_corruption(
        b in corrupted(crate::io::kafka::group::encode_positions(
            &[("orders".to_string(), 17), ("customers".to_string(), -1)].into_iter().collect()
        ).into_bytes())
    ) {
        let _ = crate::io::kafka::group::decode_positions(&String::from_utf8_lossy(&b));
    }
}
