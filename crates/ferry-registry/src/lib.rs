//! `ferry registry`: a schema registry that speaks Confluent's REST API, so every existing
//! serializer works unchanged, and keeps its state in a compacted Kafka topic (`_schemas`) in
//! Confluent's own record format.
//!
//! Where a schema travels: an HTTP request (`api`) is decided against the in-memory [`state`]
//! (pure: ids, subjects, versions, deletes, configs, modes) into `_schemas` [`records`]; the
//! `store` writes them to Kafka and answers once its reader has applied them back, which is how
//! every instance learns of them too.

pub mod config;
pub mod error;
pub mod records;
pub mod schema;
pub mod state;
