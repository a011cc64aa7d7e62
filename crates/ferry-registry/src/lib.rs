//! `ferry registry`: a schema registry that speaks Confluent's REST API, so every existing
//! serializer works unchanged, and keeps its state in a compacted Kafka topic (`_schemas`) in
//! Confluent's own record format.
//!
//! Where a schema travels: an HTTP request (`api`) is decided against the in-memory [`state`]
//! (pure: ids, subjects, versions, deletes, configs, modes) into `_schemas` [`records`]; the
//! `store` writes them to Kafka and answers once its reader has applied them back, which is how
//! every instance learns of them too. One instance, elected through Kafka's group protocol
//! ([`leader`]), writes; the others forward writes to it ([`forward`]).

pub mod config;
pub mod error;
pub mod records;
pub mod schema;
pub mod state;
pub mod store;
pub mod api;
pub mod avro;
pub mod compat;
pub mod json_schema;
pub mod protobuf;
pub mod leader;
pub mod forward;
pub mod telemetry;
pub mod auth;
pub mod openapi;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Opens the store (creating or checking `_schemas`, reading it to its end), joins the leader
/// election, then serves the REST API (and Prometheus text at `/metrics`, rendered by `render`)
/// on every listener until `cancel`; `auth` (loaded by the caller: its files are configuration)
/// guards every route.
pub async fn run(config: config::RegistryConfig, auth: Option<Arc<auth::Auth>>, render: telemetry::Render, cancel: CancellationToken) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = store::Store::open(&config, cancel.clone()).await?;
    let election = leader::spawn(&config, store.clone(), cancel.clone())?;
    // A write waits for an election to settle: a killed leader is replaced once its session (10 s) expires.
    let forwarder = forward::Forwarder::new(store.clone(), config.advertised_url(), config.timeout.max(std::time::Duration::from_secs(30)));
    let app = Arc::new(api::App { store: store.clone(), default_compatibility: config.compatibility, mode_mutability: config.mode_mutability, parsed: Default::default() });
    let document = Arc::new(openapi::document().to_string());
    let metrics = axum::Router::new()
        .route("/metrics", axum::routing::get(telemetry::scrape))
        .route("/openapi.json", axum::routing::get(move || {
            let document = document.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document.as_str().to_string()) }
        }))
        .with_state((store, render));
    let mut router = api::router(app).layer(axum::middleware::from_fn_with_state(forwarder, forward::route)).merge(metrics);
    if let Some(auth) = auth {
        router = router.layer(axum::middleware::from_fn_with_state(auth, auth::check));
    }
    let router = router.layer(axum::middleware::from_fn(telemetry::observe));
    let mut servers = tokio::task::JoinSet::new();
    for addr in &config.listeners {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        info!(listen = %addr, topic = %config.topic, store = %config.store.bootstrap_servers, "ferry registry serving");
        let (router, cancel) = (router.clone(), cancel.clone());
        servers.spawn(async move { axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned()).await });
    }
    while let Some(done) = servers.join_next().await {
        done.map_err(|e| format!("server task failed: {e}"))??;
    }
    // Leaving the group lets another instance lead at once rather than after the session.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::task::spawn_blocking(move || election.join())).await;
    Ok(())
}
