//! MM2's internal records as read from Kafka (checkpoints, offset syncs, heartbeats): any
//! bytes decode or are refused, never a panic, and whatever decodes encodes back to the same
//! bytes (the format has one encoding per value).
#![no_main]

use ferry_mirror::heartbeat::Heartbeat;
use ferry_mirror::records::{Checkpoint, OffsetSync};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the rest into key and value.
    let Some((&split, rest)) = data.split_first() else { return };
    let (key, value) = rest.split_at(usize::from(split).min(rest.len()));
    if let Ok(c) = Checkpoint::decode(key, value) {
        assert_eq!(c.encode_key().unwrap(), key);
        assert_eq!(c.encode_value().unwrap(), value);
    }
    if let Ok(s) = OffsetSync::decode(key, value) {
        assert_eq!(s.encode_key().unwrap(), key);
        assert_eq!(s.encode_value().unwrap(), value);
    }
    if let Ok(h) = Heartbeat::decode(key, value) {
        assert_eq!(h.encode_key().unwrap(), key);
        assert_eq!(h.encode_value().unwrap(), value);
    }
});
