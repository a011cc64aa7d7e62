//! The HTTP surface of `ferry serve`, request by request on the router (no network): auth,
//! errors, the aggregated JSON, Prometheus text, the OpenAPI document and the console.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use ferry_mirror::report::{now_ms, GroupCheckpoint, LatencySummary, MetricsReport, PartitionMetrics};
use ferry_mirror::MirrorConfig;
use ferry_serve::{router, Shared, Token};
use http_body_util::BodyExt;
use tower::ServiceExt;

const CONFIG: &str = "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\n\
    a.security.protocol = SASL_PLAINTEXT\na.sasl.mechanism = PLAIN\na.sasl.username = u\na.sasl.password = supersecret\na->b.enabled = true\n";

fn report(process: &str, at_ms: i64, records: u64, lag: i64) -> MetricsReport {
    let latency = LatencySummary { samples: 2, p50_ms: Some(12), p99_ms: Some(80), max_ms: Some(95) };
    MetricsReport {
        heartbeat_ms: Some(at_ms - 200),
        latency: latency.clone(),
        partitions: vec![PartitionMetrics {
            latency,
            records,
            bytes: records * 100,
            position: records as i64,
            lag,
            last_timestamp_ms: at_ms - 1000,
            ..PartitionMetrics::new("orders", "a.orders", 0)
        }],
        checkpoints: vec![GroupCheckpoint { group: "app".into(), checked_ms: at_ms - 300 }],
        ..MetricsReport::new("a", "b", process, at_ms - 60_000, at_ms)
    }
}

fn shared() -> Arc<Shared> {
    let config = MirrorConfig::parse("mm2.properties", CONFIG).unwrap();
    let shared = Arc::new(Shared::new(&config));
    let now = now_ms();
    let mut agg = shared.aggregator.lock().unwrap();
    agg.apply(report("host:1:1", now - 3000, 40, 60));
    agg.apply(report("host:1:1", now - 1000, 100, 0));
    drop(agg);
    shared
}

async fn call(app: &axum::Router, uri: &str, auth: Option<&str>) -> (StatusCode, String, axum::http::HeaderMap) {
    let mut req = Request::builder().uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

#[tokio::test]
async fn without_a_valid_token_api_and_console_answer_401() {
    let app = router(shared(), None, None, None, Token::new(Some("s3cret".into())));
    for uri in ["/api/v1/flows", "/api/v1/clusters", "/api/v1/flows/a-%3Eb", "/metrics", "/openapi.json"] {
        let (status, body, headers) = call(&app, uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{uri}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        let (status, _, _) = call(&app, uri, Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let (status, _, _) = call(&app, uri, Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    // The console: a sign-in page with 401, then the console with the cookie it sets.
    let (status, body, _) = call(&app, "/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("This server needs an API token"));
    let req = Request::builder().uri("/").header(header::COOKIE, "other=1; ferry_token=s3cret").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Probes stay open.
    assert_eq!(call(&app, "/api/v1/health", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn flows_are_aggregated_with_stable_errors() {
    let shared = shared();
    let app = router(shared.clone(), None, None, None, Token::default());
    let (status, body, _) = call(&app, "/api/v1/flows", None).await;
    assert_eq!(status, StatusCode::OK);
    let flows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let f = &flows[0];
    assert_eq!((f["flow"].as_str(), f["state"].as_str(), f["processes"].as_u64()), (Some("a->b"), Some("active"), Some(1)));
    assert_eq!((f["records_total"].as_u64(), f["lag_records"].as_i64()), (Some(100), Some(0)));
    assert_eq!(f["latency"]["p99_ms"], 80);
    assert!((f["records_per_sec"].as_f64().unwrap() - 10.0).abs() < 1e-9, "100 records in the 10 s window: {body}");

    let (status, body, _) = call(&app, "/api/v1/flows/a-%3Eb", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["topics"][0]["remote_topic"], "a.orders");
    assert_eq!(d["topics"][0]["partitions"][0]["position"], 100);
    assert_eq!(d["checkpoints"][0]["group"], "app");
    let (status, body, _) = call(&app, "/api/v1/flows/a-%3Eb/series", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap().is_empty());

    let (status, body, _) = call(&app, "/api/v1/flows/x-%3Ey", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "not_found");
    assert_eq!(e["error"]["message"], "no flow 'x->y' (flows: a->b)");
    assert_eq!(call(&app, "/api/v2/nothing", None).await.0, StatusCode::NOT_FOUND);

    // Readiness waits for the metrics; an unreachable target makes the flow's data 503.
    assert_eq!(call(&app, "/api/v1/ready", None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    shared.caught_up.lock().unwrap().insert("b".into());
    assert_eq!(call(&app, "/api/v1/ready", None).await.0, StatusCode::OK);
    {
        let mut clusters = shared.clusters.lock().unwrap();
        let b = clusters.get_mut("b").unwrap();
        b.reachable = Some(false);
        b.error = Some("connection refused".into());
    }
    let (status, body, _) = call(&app, "/api/v1/flows/a-%3Eb", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "cluster_unreachable");
    assert_eq!(e["error"]["message"], "cluster 'b' (127.0.0.1:2) is unreachable: connection refused");

    // No secret in any answer.
    for uri in ["/api/v1/clusters", "/api/v1/flows", "/metrics", "/openapi.json"] {
        let (_, body, _) = call(&app, uri, None).await;
        assert!(!body.contains("supersecret"), "{uri} leaks the SASL password");
    }
}

#[tokio::test]
async fn prometheus_openapi_and_the_pages() {
    let app = router(shared(), None, None, None, Token::default());
    let (status, text, headers) = call(&app, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    for line in [
        "ferry_replication_records_total{flow=\"a->b\",topic=\"orders\",partition=\"0\"} 100",
        "ferry_replication_lag_records{flow=\"a->b\",topic=\"orders\",partition=\"0\"} 0",
        "ferry_replication_latency_seconds{flow=\"a->b\",quantile=\"0.99\"} 0.08",
        "ferry_replication_flow_state{flow=\"a->b\",state=\"active\"} 1",
        "# TYPE ferry_replication_records_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    let (status, body, _) = call(&app, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/v1/flows", "/api/v1/flows/{flow}", "/api/v1/flows/{flow}/series", "/api/v1/clusters", "/api/v1/health", "/api/v1/ready"] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    // Operation ids are unique (clients generate a method per id).
    let ids: Vec<&str> = doc["paths"].as_object().unwrap().values().flat_map(|p| p.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str())).collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate operation ids: {ids:?}");
    // Without a token no route needs one, and the document says so.
    assert!(doc["security"].is_null() && doc["components"]["securitySchemes"].is_null(), "{}", doc["security"]);
    let secured = router(shared(), None, None, None, Token::new(Some("s3cret".into())));
    let (_, body, _) = call(&secured, "/openapi.json", Some("Bearer s3cret")).await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    // The interactive API page and its assets come from the binary.
    let (status, page, _) = call(&app, "/api/docs/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains("https://"), "the API page must not load anything from the network");
    let (status, _, _) = call(&app, "/api/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, console, _) = call(&app, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(console.contains("id=\"topology\"") && !console.contains("https://"), "the console is self-contained");
}
