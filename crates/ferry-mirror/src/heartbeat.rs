//! MM2's heartbeat record: key `{sourceClusterAlias, targetClusterAlias}`, value
//! `{version: INT16 = 0, timestamp: INT64}`, in Kafka's `Struct` encoding.

use crate::mm2_codec::{Reader, Writer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub source_cluster: String,
    pub target_cluster: String,
    pub timestamp_ms: i64,
}

impl Heartbeat {
    pub fn encode_key(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.string(&self.source_cluster);
        w.string(&self.target_cluster);
        w.into_bytes()
    }

    pub fn encode_value(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.i16(0);
        w.i64(self.timestamp_ms);
        w.into_bytes()
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Heartbeat, String> {
        let mut k = Reader::new(key);
        let source_cluster = k.string()?;
        let target_cluster = k.string()?;
        k.finish()?;
        let mut v = Reader::new(value);
        v.version_0("heartbeat")?;
        let timestamp_ms = v.i64()?;
        v.finish()?;
        Ok(Heartbeat { source_cluster, target_cluster, timestamp_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mm2_bytes() {
        let hb = Heartbeat { source_cluster: "a".into(), target_cluster: "bb".into(), timestamp_ms: 0x0102030405060708 };
        // STRING = int16 length + UTF-8; INT16/INT64 big-endian; version header 0.
        assert_eq!(hb.encode_key().unwrap(), vec![0, 1, b'a', 0, 2, b'b', b'b']);
        assert_eq!(hb.encode_value().unwrap(), vec![0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Heartbeat::decode(&hb.encode_key().unwrap(), &hb.encode_value().unwrap()).unwrap(), hb);
    }

    #[test]
    fn rejects_truncated_or_unknown_versions() {
        assert!(Heartbeat::decode(&[0, 5, b'a'], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(Heartbeat::decode(&[0, 1, b'a', 0, 1, b'b'], &[0, 1, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(Heartbeat::decode(&[0, 1, b'a', 0, 1, b'b', 9], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }
}
