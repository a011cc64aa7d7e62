//! `ferry sql`: streaming SQL in Flink's dialect over Kafka topics.
//!
//! A job file travels: [`parse`] (Flink's DDL and statements, with their places in the file) →
//! [`catalog`] (tables over topics, their options checked as Flink checks them) → [`plan`]
//! (DataFusion plans each query; its logical plan becomes Ferry's operators over Arrow batches)
//! → [`run`] (Kafka consumers decode records with [`format`], the operators run, producers
//! write the results).

pub mod api;
pub mod avro;
pub mod catalog;
pub mod changelog;
pub mod checkpoint;
pub mod commands;
pub mod error;
pub mod format;
mod functions;
pub mod join;
pub mod materialize;
pub mod ops;
pub mod on_flink;
pub mod parse;
pub mod plan;
mod plan_join;
pub mod report;
pub mod reserved;
pub mod run;
pub mod retract;
pub mod session;
pub mod statements;
mod source;
pub mod subtasks;
pub mod temporal;
pub mod tvf;
pub mod topn;
pub mod types;
pub mod view;
pub mod watermark;

pub use error::{Pos, SqlError};
