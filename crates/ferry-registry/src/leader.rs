//! Electing the one instance that writes, through Kafka's group protocol on the store cluster
//! (as Confluent's and Karapace's registries do, though with the consumer protocol: librdkafka
//! speaks no other, so Ferry and Confluent instances do not share a group).
//!
//! Every eligible instance joins `schema.registry.group.id` subscribed to the one-partition
//! schemas topic: the member the group assigns partition 0 leads. Its client id is its advertised
//! URL, so every instance (eligible or not) finds the leader's URL by describing the group. An
//! instance that gets partition 0 takes the writer's role ([`Store::lead`]: fencing any previous
//! leader) before it says it leads; one that loses it gives the role up at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_kafka::{Backoff, ClientRole};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RegistryConfig;
use crate::store::{Leadership, Store};

/// How often the group is described for the leader's URL.
const DESCRIBE_EVERY: Duration = Duration::from_secs(1);

/// Starts the election thread; it publishes into `store.leadership` until `cancel`, then leaves
/// the group (so another instance takes over at once) and ends.
pub fn spawn(config: &RegistryConfig, store: Arc<Store>, cancel: CancellationToken) -> Result<std::thread::JoinHandle<()>, String> {
    let url = config.advertised_url();
    let group = config.group_id.clone();
    let topic = config.topic.clone();
    let consumer: BaseConsumer = config
        .store
        .client_config_with_defaults(
            ClientRole::Consumer,
            // Cooperative: a member joining or leaving does not take partition 0 from the leader
            // for the rebalance (an eager rebalance would stop writes each time).
            &[("enable.auto.commit", "false"), ("auto.offset.reset", "latest"), ("session.timeout.ms", "10000"), ("heartbeat.interval.ms", "1000"), ("partition.assignment.strategy", "cooperative-sticky")],
        )
        .set("group.id", &group)
        .set("client.id", &url)
        .create()
        .map_err(|e| format!("cannot create the election client: {e}"))?;
    let eligible = config.leader_eligibility;
    if eligible {
        consumer.subscribe(&[&topic]).map_err(|e| format!("cannot join group '{group}': {e}"))?;
    }
    info!(group = %group, url = %url, eligible, "joining the leader election");
    std::thread::Builder::new()
        .name("registry-election".into())
        .spawn(move || Election { consumer, store, group, topic, url, eligible }.run(cancel))
        .map_err(|e| format!("cannot start the election thread: {e}"))
}

struct Election {
    consumer: BaseConsumer,
    store: Arc<Store>,
    group: String,
    topic: String,
    url: String,
    eligible: bool,
}

impl Election {
    fn run(self, cancel: CancellationToken) {
        let mut described = Instant::now() - DESCRIBE_EVERY;
        let mut retry = Backoff::default();
        let mut next_try = Instant::now();
        let mut failing = false;
        while !cancel.is_cancelled() {
            if self.eligible {
                // Records are not wanted here (the store's reader applies them); polling keeps
                // the membership and runs rebalances.
                let _ = self.consumer.poll(Duration::from_millis(100));
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
            let assigned = self.eligible && self.consumer.assignment().is_ok_and(|a| a.find_partition(&self.topic, 0).is_some());
            if assigned && !self.store.leads() && Instant::now() >= next_try {
                match self.store.lead() {
                    Ok(()) => {
                        info!(group = %self.group, url = %self.url, "this instance leads: it takes the writes");
                        retry.reset();
                        failing = false;
                    }
                    Err(e) => {
                        next_try = Instant::now() + retry.next_wait();
                        if !failing {
                            warn!(group = %self.group, error = %e, "elected, but cannot take the writer's role yet; retrying with backoff");
                            failing = true;
                        }
                    }
                }
            }
            if !assigned && self.store.leads() {
                self.store.resign();
                info!(group = %self.group, "this instance no longer leads");
            }
            let me = assigned && self.store.leads();
            if me {
                self.publish(Leadership { me: true, url: Some(self.url.clone()) });
                continue;
            }
            // Said at once (describing the group can take seconds during a rebalance).
            if self.store.leadership.borrow().me {
                self.publish(Leadership { me: false, url: None });
            }
            if described.elapsed() >= DESCRIBE_EVERY {
                described = Instant::now();
                let url = self.leader_url();
                self.publish(Leadership { me: false, url });
            }
        }
        self.store.resign();
        if self.eligible {
            self.consumer.unsubscribe();
            let _ = self.consumer.poll(Duration::from_millis(100));
        }
    }

    fn publish(&self, now: Leadership) {
        self.store.leadership.send_if_modified(|l| {
            let changed = *l != now;
            if changed && !now.me {
                info!(group = %self.group, leader = ?now.url, "leader");
            }
            *l = now;
            changed
        });
    }

    /// The URL of the member assigned partition 0 (its client id), from the group's description.
    fn leader_url(&self) -> Option<String> {
        let groups = self.consumer.fetch_group_list(Some(&self.group), Duration::from_secs(5)).ok()?;
        let group = groups.groups().iter().find(|g| g.name() == self.group)?;
        group.members().iter().find(|m| m.assignment().is_some_and(|a| ferry_kafka::assigned_partitions(a).iter().any(|(t, p)| *t == self.topic && *p == 0))).map(|m| m.client_id().to_string())
    }
}
