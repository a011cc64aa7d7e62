//! Cluster monitoring, the part of `ferry serve` that watches every cluster of its file: brokers,
//! topics, consumer groups with their lag in records and seconds, and a health status per group
//! and partition (issue 16).
//!
//! Pure decisions live here first, each with its tests: [`status`] judges a partition's recent
//! samples by Burrow's rules (without Burrow's known failure), [`lag`] turns a committed offset
//! into seconds, exactly where a record's timestamp is known and with a stated error bound where
//! it is interpolated. [`groups`] reads a group's lag from a cluster and [`collect`] polls
//! every cluster's groups into views the API serves; history, alerts and the console pages build
//! on them.

pub mod alerts;
pub mod canary;
pub mod cluster;
pub mod collect;
pub mod groups;
pub mod history;
pub mod lag;
pub mod notify;
pub mod status;
