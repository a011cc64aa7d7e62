use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Result of a Kafka operation performed by Ferry.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a caller should react to an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The cluster could not be reached or answered with a transient error: back off, retry.
    Retriable,
    /// The request was refused for a reason retrying will not fix (authorization,
    /// invalid request, unsupported by the broker).
    Fatal,
}

/// A Kafka operation that failed, naming the cluster (alias and address) and the operation.
#[derive(Debug, thiserror::Error)]
#[error("cluster '{cluster}' ({bootstrap}): {operation} failed: {source}")]
pub struct Error {
    pub cluster: String,
    pub bootstrap: String,
    pub operation: String,
    #[source]
    pub source: KafkaError,
}

impl Error {
    pub fn new(
        cluster: &crate::ClusterClient,
        operation: impl Into<String>,
        source: KafkaError,
    ) -> Self {
        Error {
            cluster: cluster.alias.clone(),
            bootstrap: cluster.bootstrap_servers.clone(),
            operation: operation.into(),
            source,
        }
    }

    /// Whether retrying later can succeed.
    pub fn kind(&self) -> ErrorKind {
        classify(&self.source)
    }

    pub fn is_retriable(&self) -> bool {
        self.kind() == ErrorKind::Retriable
    }

    /// What to do about a refused permission or failed login, naming the cluster's
    /// properties; None for other errors.
    pub fn hint(&self) -> Option<String> {
        let code = match &self.source {
            KafkaError::AdminOp(code) => Some(*code),
            other => other.rdkafka_error_code(),
        }?;
        use RDKafkaErrorCode::*;
        match code {
            TopicAuthorizationFailed | GroupAuthorizationFailed | ClusterAuthorizationFailed | TransactionalIdAuthorizationFailed => Some(format!(
                "the principal configured for cluster '{}' ({}.sasl.* / {}.ssl.*) lacks a permission (ACL) for: {}",
                self.cluster, self.cluster, self.cluster, self.operation
            )),
            SaslAuthenticationFailed | Authentication => Some(format!(
                "cluster '{}' refused the login: check {}.sasl.* / {}.security.protocol",
                self.cluster, self.cluster, self.cluster
            )),
            _ => None,
        }
    }
}

/// Classifies an rdkafka error. Transport, timeout and leadership errors are retriable;
/// authorization, authentication, invalid requests and unsupported APIs are fatal.
pub fn classify(error: &KafkaError) -> ErrorKind {
    let code = match error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(code) => classify_code(code),
        // Errors without a code are client-side (configuration, creation): not retriable.
        None => ErrorKind::Fatal,
    }
}

/// The group coordinator is moving, loading or not yet known: Kafka answers OffsetFetch and
/// OffsetCommit so for a few seconds after a broker (re)start or a coordinator move, and
/// librdkafka hands the error to the caller. Asking again shortly after succeeds.
pub fn coordinator_moving(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::{CoordinatorLoadInProgress, CoordinatorNotAvailable, NotCoordinator};
    matches!(error.rdkafka_error_code(), Some(NotCoordinator | CoordinatorLoadInProgress | CoordinatorNotAvailable))
}

/// Whether `error` says a partition's leadership is moving (a broker fenced after a pause, a
/// leader election under way): answers that pass once the cluster has settled.
pub fn leadership_moving(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::{FencedLeaderEpoch, LeaderNotAvailable, NotLeaderForPartition, UnknownLeaderEpoch};
    matches!(error.rdkafka_error_code(), Some(NotLeaderForPartition | LeaderNotAvailable | FencedLeaderEpoch | UnknownLeaderEpoch))
}

fn classify_code(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode::*;
    match code {
        TopicAuthorizationFailed
        | GroupAuthorizationFailed
        | ClusterAuthorizationFailed
        | TransactionalIdAuthorizationFailed
        | SaslAuthenticationFailed
        | Authentication
        | UnsupportedSASLMechanism
        | IllegalSASLState
        | UnsupportedVersion
        | UnsupportedFeature
        | InvalidConfig
        | InvalidRequest
        | PolicyViolation
        | InvalidReplicationFactor
        | InvalidPartitions
        | InvalidTopic
        | MessageSizeTooLarge
        | InvalidArgument
        | Fatal
        | UnknownTopic
        | InvalidRecord => ErrorKind::Fatal,
        _ => ErrorKind::Retriable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_are_retriable_authorization_is_fatal() {
        let transport = KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(classify(&transport), ErrorKind::Retriable);
        let timed_out = KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut);
        assert_eq!(classify(&timed_out), ErrorKind::Retriable);
        let denied = KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(classify(&denied), ErrorKind::Fatal);
        let unsupported = KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedVersion);
        assert_eq!(classify(&unsupported), ErrorKind::Fatal);
    }

    #[test]
    fn permission_errors_carry_a_hint_naming_the_cluster_properties() {
        let cluster = crate::ClusterClient::new("b", "10.0.0.2:9092");
        let denied = Error::new(&cluster, "write ferry-control.internal", KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed));
        let hint = denied.hint().unwrap();
        assert!(hint.contains("cluster 'b'") && hint.contains("b.sasl.*") && hint.contains("write ferry-control.internal"), "{hint}");
        let down = Error::new(&cluster, "fetch metadata", KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure));
        assert_eq!(down.hint(), None);
        assert!(down.to_string().contains("cluster 'b' (10.0.0.2:9092)"));
    }
}
