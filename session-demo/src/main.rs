//! `cargo run -p session-demo [-- --store URL] [--migrate-from URL] [--ports 8081,8082] [--transport cookie|header|bearer]`
//!
//! Two service instances on 127.0.0.1 share one session store (a SQLite file by default; any
//! store with `--store URL` or `SESSION_STORE_URL`). Log in on one, read your profile on the
//! other. `--migrate-from URL` (or `SESSION_STORE_MIGRATE_FROM`) moves the sessions of another
//! store into this one as they are used, so nobody is logged out by the change.

use std::net::SocketAddr;

use session_demo::{instance_with, serve, with_metrics, Transport};
use session_store::StoreConfig;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        // The whole cause chain: "session store unavailable (memcached, open): connection refused".
        let mut line = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("session-demo: {line}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut store = std::env::var("SESSION_STORE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "sqlite://session-demo.db".to_owned());
    let mut migrate_from = std::env::var("SESSION_STORE_MIGRATE_FROM")
        .ok()
        .filter(|url| !url.is_empty());
    let mut ports = vec![8081u16, 8082];
    let mut transport = Transport::Cookie;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => store = value()?,
            "--migrate-from" => migrate_from = Some(value()?),
            "--ports" => {
                ports = value()?
                    .split(',')
                    .map(|p| p.trim().parse().map_err(|_| format!("bad port {p}")))
                    .collect::<Result<_, _>>()?
            }
            "--transport" => {
                transport = match value()?.as_str() {
                    "cookie" => Transport::Cookie,
                    "header" => Transport::Header,
                    "bearer" => Transport::Bearer,
                    other => return Err(format!("unknown transport {other}").into()),
                }
            }
            _ => {
                return Err(
                    "usage: session-demo [--store URL] [--migrate-from URL] [--ports 8081,8082] [--transport cookie|header|bearer]".into(),
                )
            }
        }
    }
    // `RUST_LOG=session_store=debug` shows one line per store call.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("session_store_operation_seconds".into()),
            session_instrument::LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    // Histogram samples wait in the recorder until they are folded into summaries: fold them
    // every few seconds, or an instance nobody scrapes grows by every call's timing.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    let mut servers = tokio::task::JoinSet::new();
    for port in &ports {
        let config = StoreConfig::new(&store).with_migrate_from(migrate_from.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        let (listener, router) = instance_with(addr, config, transport).await?;
        servers.spawn(serve(listener, with_metrics(router, metrics.clone())));
    }
    let shown = |url: &str| url.split('@').next_back().unwrap_or(url).to_owned();
    println!(
        "session-demo: {} instances share the store {}",
        ports.len(),
        shown(&store)
    );
    if let Some(old) = &migrate_from {
        println!(
            "  moving sessions from {} as they are used (logins made there still work)",
            shown(old)
        );
    }
    println!(
        "  (plain HTTP on loopback, so the session cookie's Secure flag is OFF for this demo)"
    );
    println!("  users: morris/morris, alice/wonderland, bob/builder");
    let (a, b) = (ports[0], ports[ports.len() - 1]);
    println!("\nTry it (the cookie jar carries the session from one instance to the other):");
    println!("  curl -c jar -H 'content-type: application/json' -d '{{\"username\":\"morris\",\"password\":\"morris\"}}' http://127.0.0.1:{a}/login");
    println!("  curl -b jar http://127.0.0.1:{b}/profile");
    println!("  curl -b jar http://127.0.0.1:{b}/sessions");
    println!("  curl -b jar -c jar -X POST http://127.0.0.1:{a}/logout");
    println!("  curl -b jar http://127.0.0.1:{b}/profile      # 401 now");
    println!("  curl http://127.0.0.1:{a}/metrics             # store calls, Prometheus text");
    println!("\nCtrl-C stops both instances.");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(result) = servers.join_next() => Err(format!("an instance stopped: {result:?}").into()),
    }
}
