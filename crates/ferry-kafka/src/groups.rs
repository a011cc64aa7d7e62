//! Consumer groups as the brokers describe them (ListGroups and DescribeGroups): state, protocol
//! type, and each member's client id, host and assigned partitions.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{ClientRole, ClusterClient, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub client_id: String,
    pub host: String,
    /// What the consumer protocol assigned it: (topic, partition).
    pub assignment: Vec<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub name: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Dead`.
    pub state: String,
    /// `consumer` for consumer groups (Connect and the registry's election use others).
    pub protocol_type: String,
    pub members: Vec<GroupMember>,
}

/// Every group of the cluster, or the one named, with its members.
pub fn describe_groups(cluster: &ClusterClient, group: Option<&str>, within: Duration) -> Result<Vec<GroupDescription>> {
    let consumer: BaseConsumer = cluster.client_config(ClientRole::Consumer).create().map_err(|e| Error::new(cluster, "create a client", e))?;
    let list = consumer.fetch_group_list(group, within).map_err(|e| Error::new(cluster, "describe consumer groups", e))?;
    Ok(list
        .groups()
        .iter()
        .map(|g| GroupDescription {
            name: g.name().to_string(),
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            members: g
                .members()
                .iter()
                .map(|m| GroupMember {
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    assignment: if g.protocol_type() == "consumer" { m.assignment().map(assigned_partitions).unwrap_or_default() } else { Vec::new() },
                })
                .collect(),
        })
        .collect())
}

/// The partitions a consumer-protocol member assignment holds (version, then topics with their
/// partitions, then user data); bytes that do not parse give what was read before them.
pub fn assigned_partitions(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut at = 2; // version
    let mut take = |n: usize| -> Option<&[u8]> {
        let v = bytes.get(at..at + n)?;
        at += n;
        Some(v)
    };
    let _ = (|| -> Option<()> {
        let int32 = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let topics = int32(take(4)?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(2)?.try_into().ok()?).max(0) as usize;
            let name = String::from_utf8_lossy(take(len)?).into_owned();
            let partitions = int32(take(4)?);
            for _ in 0..partitions.max(0) {
                out.push((name.clone(), int32(take(4)?)));
            }
        }
        Some(())
    })();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = vec![0, 1];
        out.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            out.extend((t.len() as i16).to_be_bytes());
            out.extend(t.as_bytes());
            out.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                out.extend(p.to_be_bytes());
            }
        }
        out.extend((-1i32).to_be_bytes()); // no user data
        out
    }

    #[test]
    fn assignments_parse_and_truncated_bytes_give_what_was_read() {
        assert_eq!(assigned_partitions(&assignment(&[("a", &[0, 2]), ("b", &[1])])), vec![("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]);
        assert_eq!(assigned_partitions(&assignment(&[])), vec![]);
        let mut cut = assignment(&[("a", &[0, 2])]);
        cut.truncate(cut.len() - 8);
        assert_eq!(assigned_partitions(&cut), vec![("a".to_string(), 0)]);
        assert_eq!(assigned_partitions(&[]), vec![]);
    }
}
