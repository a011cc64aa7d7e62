//! The aggregated view in Prometheus text format (`ferry_<subsystem>_<name>_<unit>`).

use std::fmt::Write;

use ferry_monitor::collect::ClusterSnapshot;
use ferry_monitor::status::Status;

use crate::aggregate::{FlowDetail, FlowState};
use crate::collect::ClusterView;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// The monitored clusters' brokers, topics and groups as last polled (`ferry_group_*`,
/// `ferry_topic_*`, `ferry_broker_*`).
fn render_monitoring(o: &mut Out, polled: &[(String, std::sync::Arc<ClusterSnapshot>)]) {
    o.family("ferry_broker_partitions_led", "gauge", "Partitions the broker leads");
    o.family("ferry_broker_under_replicated_partitions", "gauge", "Under-replicated partitions with a replica on the broker");
    for (cluster, snap) in polled {
        for b in &snap.brokers {
            let id = b.id.to_string();
            o.sample("ferry_broker_partitions_led", &[("cluster", cluster), ("broker", &id)], b.partitions_led as f64);
            o.sample("ferry_broker_under_replicated_partitions", &[("cluster", cluster), ("broker", &id)], b.under_replicated as f64);
        }
    }
    o.family("ferry_topic_partitions", "gauge", "Partitions of the topic");
    o.family("ferry_topic_under_replicated_partitions", "gauge", "Partitions with fewer in-sync replicas than replicas");
    o.family("ferry_topic_offline_partitions", "gauge", "Partitions without a leader");
    o.family("ferry_topic_end_offsets_total", "counter", "Sum of the topic's partition end offsets (records written)");
    for (cluster, snap) in polled {
        for t in &snap.topics {
            let labels = [("cluster", cluster.as_str()), ("topic", t.topic.as_str())];
            o.sample("ferry_topic_partitions", &labels, t.partitions.len() as f64);
            o.sample("ferry_topic_under_replicated_partitions", &labels, t.under_replicated as f64);
            o.sample("ferry_topic_offline_partitions", &labels, t.offline as f64);
            o.sample("ferry_topic_end_offsets_total", &labels, t.end_total as f64);
        }
    }
    o.family("ferry_group_status", "gauge", "1 for the group's current status (OK, WARN, REWIND, STALL, STOP, ERR)");
    for (cluster, snap) in polled {
        for g in snap.groups.values() {
            for status in Status::ALL {
                o.sample("ferry_group_status", &[("cluster", cluster), ("group", &g.group), ("status", status.as_str())], if g.status == status { 1.0 } else { 0.0 });
            }
        }
    }
    o.family("ferry_group_lag_records", "gauge", "Records the group has not consumed, per partition (absent before its first commit)");
    o.family("ferry_group_lag_seconds", "gauge", "Age of the first record the group has not consumed, per partition (0 caught up; absent when unknown)");
    for (cluster, snap) in polled {
        for g in snap.groups.values() {
            for p in &g.partitions {
                let partition = p.lag.partition.to_string();
                let labels = [("cluster", cluster.as_str()), ("group", g.group.as_str()), ("topic", p.lag.topic.as_str()), ("partition", partition.as_str())];
                if let Some(lag) = p.lag.lag {
                    o.sample("ferry_group_lag_records", &labels, lag as f64);
                }
                if let Some(s) = p.lag.lag_seconds {
                    o.sample("ferry_group_lag_seconds", &labels, s.seconds);
                }
            }
        }
    }
}

pub(crate) fn render(flows: &[FlowDetail], clusters: &[ClusterView], polled: &[(String, std::sync::Arc<ClusterSnapshot>)], canaries: &[(String, ferry_monitor::canary::CanaryState)]) -> String {
    let mut o = Out { text: String::new() };
    render_monitoring(&mut o, polled);
    o.family("ferry_canary_latency_seconds", "gauge", "End-to-end latency of the canary's records through each broker over the last minute: quantile 0.5, 0.99");
    for (cluster, c) in canaries {
        for b in &c.brokers {
            let broker = b.broker.to_string();
            for (q, v) in [("0.5", b.p50_ms), ("0.99", b.p99_ms)] {
                if let Some(ms) = v {
                    o.sample("ferry_canary_latency_seconds", &[("cluster", cluster), ("broker", &broker), ("quantile", q)], ms / 1000.0);
                }
            }
        }
    }
    o.family("ferry_cluster_up", "gauge", "1 if ferry serve reaches the cluster, 0 if not (absent until probed)");
    for c in clusters {
        if let Some(up) = c.reachable {
            o.sample("ferry_cluster_up", &[("cluster", &c.alias)], if up { 1.0 } else { 0.0 });
        }
    }
    o.family("ferry_replication_flow_state", "gauge", "1 for the flow's current state (active, paused, failing)");
    for f in flows {
        for state in FlowState::ALL {
            o.sample("ferry_replication_flow_state", &[("flow", &f.summary.flow), ("state", state.as_str())], if f.summary.state == state { 1.0 } else { 0.0 });
        }
    }
    o.family("ferry_replication_processes", "gauge", "ferry mirror processes reporting for the flow");
    for f in flows {
        o.sample("ferry_replication_processes", &[("flow", &f.summary.flow)], f.summary.processes as f64);
    }
    o.family("ferry_replication_records_total", "counter", "Records replicated, summed over every process run, per partition");
    for f in flows {
        for t in &f.topics {
            for p in &t.partitions {
                o.sample("ferry_replication_records_total", &[("flow", &f.summary.flow), ("topic", &t.topic), ("partition", &p.partition.to_string())], p.records_total as f64);
            }
        }
    }
    o.family("ferry_replication_bytes_total", "counter", "Key + value bytes replicated, summed over every process run, per flow");
    for f in flows {
        o.sample("ferry_replication_bytes_total", &[("flow", &f.summary.flow)], f.summary.bytes_total as f64);
    }
    o.family("ferry_replication_lag_records", "gauge", "Source end offset minus replicated position, per partition");
    o.family("ferry_replication_lag_seconds", "gauge", "Source-time lag of the partition (0 without lag)");
    for f in flows {
        for t in &f.topics {
            for p in &t.partitions {
                let labels = [("flow", f.summary.flow.as_str()), ("topic", t.topic.as_str()), ("partition", &p.partition.to_string())];
                o.sample("ferry_replication_lag_records", &labels, p.lag_records as f64);
                o.sample("ferry_replication_lag_seconds", &labels, p.lag_seconds);
            }
        }
    }
    o.family("ferry_replication_latency_seconds", "gauge", "Replication latency over the last report of each process (worst shown): quantile 0.5, 0.99, 1 (max)");
    for f in flows {
        for (q, v) in [("0.5", f.summary.latency.p50_ms), ("0.99", f.summary.latency.p99_ms), ("1", f.summary.latency.max_ms)] {
            if let Some(ms) = v {
                o.sample("ferry_replication_latency_seconds", &[("flow", &f.summary.flow), ("quantile", q)], ms as f64 / 1000.0);
            }
        }
    }
    o.family("ferry_replication_heartbeat_age_seconds", "gauge", "Age of the newest heartbeat the flow wrote to its target");
    for f in flows {
        if let Some(ms) = f.summary.heartbeat_age_ms {
            o.sample("ferry_replication_heartbeat_age_seconds", &[("flow", &f.summary.flow)], ms as f64 / 1000.0);
        }
    }
    o.family("ferry_replication_checkpoint_age_seconds", "gauge", "Time since the group's checkpoints were last brought up to date");
    for f in flows {
        for c in &f.checkpoints {
            o.sample("ferry_replication_checkpoint_age_seconds", &[("flow", &f.summary.flow), ("group", &c.group)], c.age_ms as f64 / 1000.0);
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        let mut o = Out { text: String::new() };
        o.sample("m", &[("flow", "a->b")], 1.5);
        assert_eq!(o.text, "m{flow=\"a->b\"} 1.5\n");
    }
}
