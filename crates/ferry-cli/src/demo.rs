//! `ferry demo`: two local Apache Kafka brokers `a` and `b` on loopback (from the jars
//! `scripts/install-kafka` installs), sample traffic into `a`, and `ferry mirror` for `a->b`,
//! with a live status line until Ctrl-C.
//!
//! Ctrl-C in a terminal sends SIGINT to the whole foreground process group. The brokers run in
//! a process group of their own, so they keep serving while the mirror drains and stores its
//! positions; then the demo stops them (SIGTERM, Kafka's clean shutdown).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_mirror::{Mirror, MirrorConfig};
use ferry_testkit::{create_topic, list_topics, Broker, BrokerOptions, RecordProducer, TestRecord};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Records per second written to each sample topic on `a`.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Serve Prometheus metrics here while the demo runs.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: std::net::SocketAddr,
    /// Serve the web console and REST API (`ferry serve`) here while the demo runs.
    #[arg(long, default_value = "127.0.0.1:8080")]
    console_addr: std::net::SocketAddr,
}

pub(crate) async fn run(args: Args) -> ExitCode {
    match demo(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: Args) -> anyhow::Result<()> {
    println!("starting local brokers (Apache Kafka, KRaft, one node each) ...");
    let options = BrokerOptions { own_process_group: true, ..BrokerOptions::default() };
    let (a, b) = {
        let (oa, ob) = (options.clone(), options);
        let a = tokio::task::spawn_blocking(move || Broker::start_with("a", oa));
        let b = tokio::task::spawn_blocking(move || Broker::start_with("b", ob));
        (a.await??, b.await??)
    };
    println!("  a: {}   b: {}", a.bootstrap(), b.bootstrap());

    let properties = format!(
        "# written by `ferry demo`: the same file works with `ferry mirror --config`\n\
         clusters = a, b\n\
         a.bootstrap.servers = {}\n\
         b.bootstrap.servers = {}\n\
         a->b.enabled = true\n\
         a->b.topics = orders, payments, shipments\n\
         refresh.topics.interval.seconds = 2\n",
        a.bootstrap(),
        b.bootstrap()
    );
    std::fs::create_dir_all(".ferry-demo")?;
    std::fs::write(".ferry-demo/mm2.properties", &properties)?;
    println!("configuration: .ferry-demo/mm2.properties");

    for topic in ["orders", "payments"] {
        create_topic(&a.bootstrap(), topic, 3)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let (bootstrap, stop, produced, rate) = (a.bootstrap(), stop.clone(), produced.clone(), args.rate);
        std::thread::spawn(move || traffic(&bootstrap, rate, &stop, &produced))
    };

    if let Err(e) = crate::install_metrics(args.metrics_addr) {
        println!("(metrics not served: {e})");
    } else {
        println!("metrics: http://{}/metrics", args.metrics_addr);
    }
    let config = MirrorConfig::parse(".ferry-demo/mm2.properties", &properties)?;
    let config_for_serve = config.clone();
    let mirror = Mirror::new(config);
    let flow = mirror.flows()[0].clone();
    let cancel = CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    let console = {
        let (config, cancel, addr) = (config_for_serve, cancel.clone(), args.console_addr);
        tokio::spawn(async move {
            let dir = std::path::PathBuf::from(".ferry-demo/serve");
            let (alerts, history) = match (ferry_serve::alerts::Alerts::open(dir.clone()), ferry_serve::history::Recorder::open(&dir)) {
                (Ok(a), Ok(h)) => (std::sync::Arc::new(a), std::sync::Arc::new(h)),
                (Err(e), _) | (_, Err(e)) => return println!("(console not served: {e})"),
            };
            if let Err(e) = ferry_serve::serve(&config, addr, ferry_serve::Services { registry: None, alerts, history, canary: Vec::new(), flink_gateways: Vec::new() }, ferry_serve::Token::default(), cancel).await {
                println!("(console not served on {addr}: {e})");
            }
        })
    };
    println!("console: http://{}/   (REST API /api/v1/flows, OpenAPI /api/docs)", args.console_addr);
    let engine = tokio::spawn(mirror.run(cancel.clone()));
    println!("mirroring a->b; Ctrl-C to stop\n");

    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut shipments_created = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if !shipments_created && started.elapsed() > Duration::from_secs(8) {
            create_topic(&a.bootstrap(), "shipments", 2)?;
            println!("\n-> created topic `shipments` on a; watch it appear on b as a.shipments");
            shipments_created = true;
        }
        let status = flow.status();
        let rate = (status.records - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), status.records);
        let remote: Vec<String> = list_topics(&b.bootstrap())
            .map(|t| t.into_iter().filter(|(n, _)| n.starts_with("a.") && !n.ends_with(".internal")).map(|(n, p)| format!("{n}[{p}]")).collect())
            .unwrap_or_default();
        print!(
            "\r[{:>4}s] produced {:>8}  replicated {:>8}  {:>7.0} rec/s  lag {:>6}  latency {:>5} ms  topics on b: {}   ",
            started.elapsed().as_secs(),
            produced.load(Ordering::Relaxed),
            status.records,
            rate,
            status.lag,
            status.last_latency_ms.map_or("-".into(), |l| l.to_string()),
            remote.join(" ")
        );
        if let Some(reason) = &status.failing {
            print!("\n  failing: {reason}");
        }
        std::io::stdout().flush()?;
        if args.duration.is_some_and(|d| started.elapsed() >= Duration::from_secs(d)) {
            cancel.cancel();
        }
    }
    println!("\nstopping ...");
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || producer.join()).await;
    engine.await??;
    // The console's clients go before the brokers do.
    let _ = console.await;
    let final_status = flow.status();
    println!("replicated {} records; positions stored; stopping brokers", final_status.records);
    let (mut a, mut b) = (a, b);
    tokio::task::spawn_blocking(move || {
        a.stop(Duration::from_secs(20));
        b.stop(Duration::from_secs(20));
    })
    .await?;
    println!("stopped");
    Ok(())
}

/// Writes `rate` records/s to each topic that exists among orders, payments, shipments.
fn traffic(bootstrap: &str, rate: u64, stop: &AtomicBool, produced: &AtomicU64) {
    let producer = match RecordProducer::new(bootstrap) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo traffic: {e}");
            return;
        }
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let topics = list_topics(bootstrap).unwrap_or_default();
        for (topic, partitions) in topics.iter().filter(|(t, _)| ["orders", "payments", "shipments"].contains(&t.as_str())) {
            let batch: Vec<TestRecord> = (0..rate / 5)
                .map(|i| TestRecord {
                    partition: ((seq + i) % *partitions as u64) as i32,
                    offset: -1,
                    key: Some(format!("customer-{}", (seq + i) % 97).into_bytes()),
                    value: Some(format!("{{\"{topic}\":{},\"amount\":{}}}", seq + i, (seq + i) % 1000).into_bytes()),
                    headers: vec![("source".into(), Some(b"ferry-demo".to_vec()))],
                    timestamp: Some(now),
                })
                .collect();
            if producer.send_all(topic, &batch).is_ok() {
                produced.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
        seq += rate / 5;
        std::thread::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed()));
    }
}
