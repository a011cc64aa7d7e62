//! Loop prevention under the identity replication policy. Remote topics keep their names, so
//! MM2 cannot tell a topic's origin and loops records forever in bi-directional setups. Ferry
//! stamps every record it copies under that policy with the clusters it has been written to,
//! in order, in the header `ferry.provenance` (comma-separated aliases), and a flow never
//! copies a record into a cluster already on that list.

/// Header carrying the comma-separated list of clusters a record has passed through.
pub const PROVENANCE_HEADER: &str = "ferry.provenance";

/// Whether a record whose provenance header is `value` has already been on `cluster`.
pub fn has_visited(value: &[u8], cluster: &str) -> bool {
    value.split(|&b| b == b',').any(|alias| alias == cluster.as_bytes())
}

/// The provenance after copying a record from `source`.
pub fn extended(value: Option<&[u8]>, source: &str) -> Vec<u8> {
    match value {
        Some(v) if !v.is_empty() => {
            let mut out = Vec::with_capacity(v.len() + 1 + source.len());
            out.extend_from_slice(v);
            out.push(b',');
            out.extend_from_slice(source.as_bytes());
            out
        }
        _ => source.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_grows_and_blocks_the_way_back() {
        let after_ab = extended(None, "a");
        assert_eq!(after_ab, b"a");
        assert!(has_visited(&after_ab, "a"), "b->a must drop it");
        assert!(!has_visited(&after_ab, "c"), "b->c may copy it");
        let after_bc = extended(Some(&after_ab), "b");
        assert_eq!(after_bc, b"a,b");
        assert!(has_visited(&after_bc, "a") && has_visited(&after_bc, "b"));
        assert!(!has_visited(&after_bc, "ab"), "whole aliases only");
    }
}
