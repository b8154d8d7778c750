//! Event listeners: the store's own channel (creates, deletes and id changes published by the
//! scripts of every instance) and the servers' expired-key notifications.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use session_core::{Error, EventBus, Result, SessionEvent, SessionKey};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::map;

/// The channel the store's scripts publish lifecycle events on.
pub(crate) fn event_channel(config: &Config) -> String {
    format!("{}events", config.prefix)
}

/// Starts the event listeners of a store and returns whether expiry events are on.
///
/// One pub/sub connection carries the store's own channel (creates, deletes and id changes
/// published by the scripts of every instance; on a Cluster, classic pub/sub reaches every
/// node, so one connection to the first seed that answers is enough). Expired keys are
/// reported by the server that expires them, through keyspace notifications
/// (`notify-keyspace-events` with `E` and `x`, or `A`): a standalone server's on the same
/// connection; on a Cluster, one connection per master, whatever seeds were configured, found
/// with `CLUSTER SLOTS` and looked up again every [`TOPOLOGY_REFRESH`], so that a master added
/// by resharding or promoted by a failover gets a listener and a node that stopped being a
/// master loses its own. Expiry events are on when every master has the notifications on at
/// open. Subscriptions are confirmed before this returns, so no event after `open` is missed.
///
/// The listeners are RESP3 connection managers (Redis 6 or later): when a connection breaks
/// (server restart, failover) they reconnect and subscribe again by themselves; a ping every
/// [`LISTENER_PING`] makes a broken connection noticed, and a failed reconnect retried, even
/// while no event arrives. Events published while a listener is disconnected, or expired on a
/// new master before the next topology lookup, are lost (pub/sub keeps nothing). The
/// listeners end when the store is dropped.
pub(crate) async fn listen(
    config: &Config,
    ca: Option<&[u8]>,
    events: &EventBus,
    stopped: watch::Receiver<()>,
) -> Result<bool> {
    let context = Context {
        session_prefix: format!("{}s:{{", config.prefix),
        timeout: config.timeout,
        ca: ca.map(<[u8]>::to_vec),
        events: events.clone(),
        stopped,
    };
    let channel = event_channel(config);
    if !config.cluster {
        let info = config.nodes[0]
            .as_str()
            .into_connection_info()
            .map_err(map)?;
        let (_, expiry) = context
            .listen_on(info, Some(&channel), Expiry::IfOn)
            .await?;
        return Ok(expiry);
    }
    // The first seed that answers carries the channel and answers the topology lookups.
    let mut first = Err(Error::backend("no Redis Cluster seed node"));
    for node in &config.nodes {
        let info = node.as_str().into_connection_info().map_err(map)?;
        first = context
            .listen_on(info.clone(), Some(&channel), Expiry::Off)
            .await
            .map(|(manager, _)| (info, manager));
        if first.is_ok() {
            break;
        }
    }
    let (seed, mut seed_listener) = first?;
    let mut listeners = HashMap::new();
    let mut everywhere = true;
    for (host, port) in cluster_masters(&mut seed_listener, &seed).await? {
        let info = node_info(&seed, host.clone(), port);
        let (listener, expiry) = context.listen_on(info, None, Expiry::IfOn).await?;
        everywhere &= expiry;
        listeners.insert((host, port), listener);
    }
    if !everywhere {
        listeners
            .values()
            .for_each(|listener| listener.task.abort());
        return Ok(false);
    }
    tokio::spawn(async move {
        let mut stopped = context.stopped.clone();
        let mut refresh = tokio::time::interval(TOPOLOGY_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = refresh.tick() => {}
                _ = stopped.changed() => return,
            }
            // A failed lookup or subscription is tried again at the next tick.
            let Ok(masters) = cluster_masters(&mut seed_listener, &seed).await else {
                continue;
            };
            listeners.retain(|address, listener| {
                let master = masters.contains(address);
                if !master {
                    listener.task.abort();
                }
                master
            });
            for (host, port) in masters {
                if listeners.contains_key(&(host.clone(), port)) {
                    continue;
                }
                let info = node_info(&seed, host.clone(), port);
                if let Ok((listener, _)) = context.listen_on(info, None, Expiry::Always).await {
                    listeners.insert((host, port), listener);
                }
            }
        }
    });
    Ok(true)
}

/// How often a Cluster store looks up its masters again (see [`listen`]).
const TOPOLOGY_REFRESH: Duration = Duration::from_secs(5);

/// Whether a listener subscribes to expired keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Off,
    /// If the node's `notify-keyspace-events` sends them.
    IfOn,
    /// Without asking (a master that joined after open, on a Cluster configured for them).
    Always,
}

/// What every listener of a store shares.
struct Context {
    session_prefix: String,
    timeout: Duration,
    ca: Option<Vec<u8>>,
    events: EventBus,
    stopped: watch::Receiver<()>,
}

/// A listener: its connection (for other commands) and the task forwarding its events, which
/// runs until the store is dropped or the task is aborted.
struct Listener {
    manager: ConnectionManager,
    task: tokio::task::JoinHandle<()>,
}

impl Context {
    /// Subscribes a connection to `info` to `channel` and, per `expiry`, to expired keys, and
    /// forwards what arrives to the store's subscribers. Returns the listener and whether it
    /// listens to expired keys.
    async fn listen_on(
        &self,
        info: ConnectionInfo,
        channel: Option<&str>,
        expiry: Expiry,
    ) -> Result<(Listener, bool)> {
        let client = node_client(info, true, self.ca.as_deref())?;
        let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
        let mut manager = client
            .get_connection_manager_with_config(
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_push_sender(sender)
                    .set_automatic_resubscription(),
            )
            .await
            .map_err(map)?;
        let expiry = match expiry {
            Expiry::Off => false,
            Expiry::Always => true,
            Expiry::IfOn => expired_key_notifications(&mut manager).await,
        };
        if let Some(channel) = channel {
            manager.subscribe(channel).await.map_err(map)?;
        }
        if expiry {
            manager
                .psubscribe("__keyevent@*__:expired")
                .await
                .map_err(map)?;
        }
        let session_prefix = self.session_prefix.clone();
        let events = self.events.clone();
        let mut stopped = self.stopped.clone();
        let mut pinged = manager.clone();
        let task = tokio::spawn(async move {
            let mut ping = tokio::time::interval(LISTENER_PING);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    push = pushes.recv() => {
                        let Some(push) = push else { return };
                        if let Some(event) = push_event(&push, &session_prefix) {
                            events.publish(event);
                        }
                    }
                    _ = ping.tick() => {
                        // Errors are what the ping is for: the manager reconnects on them.
                        let _ = redis::cmd("PING").query_async::<()>(&mut pinged).await;
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Ok((Listener { manager, task }, expiry))
    }
}

/// Whether the node sends expired-key events. Managed services may refuse CONFIG: then it is
/// taken as no. The reply is a map on a RESP3 connection and a flat array on RESP2; HashMap
/// reads both.
async fn expired_key_notifications(manager: &mut ConnectionManager) -> bool {
    let notifications: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(manager)
        .await
        .unwrap_or_default();
    let flags = notifications
        .get("notify-keyspace-events")
        .map_or("", String::as_str);
    flags.contains('E') && (flags.contains('x') || flags.contains('A'))
}

/// The masters of the Cluster `listener` is connected to, as `CLUSTER SLOTS` names them (an
/// unknown endpoint is the node asked, which is `seed`'s host).
async fn cluster_masters(
    listener: &mut Listener,
    seed: &ConnectionInfo,
) -> Result<Vec<(String, u16)>> {
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut listener.manager)
        .await
        .map_err(map)?;
    let seed_host = match seed.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.as_str(),
        _ => "",
    };
    let mut masters = Vec::new();
    let Value::Array(ranges) = slots else {
        return Err(Error::backend("CLUSTER SLOTS: not an array"));
    };
    for range in &ranges {
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) if !host.is_empty() && host != b"?" => {
                String::from_utf8_lossy(host).into_owned()
            }
            _ => seed_host.to_owned(),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !masters.contains(&(host.clone(), port)) {
            masters.push((host, port));
        }
    }
    if masters.is_empty() {
        return Err(Error::backend("CLUSTER SLOTS: no master"));
    }
    Ok(masters)
}

/// `seed`'s connection settings (credentials, TLS) for another node.
fn node_info(seed: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match seed.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    seed.clone().set_addr(addr)
}

/// A client for one node, speaking RESP3 if `resp3` (the event listeners), trusting `ca`
/// (PEM) instead of the system's trust store when given.
pub(crate) fn node_client(
    node: impl IntoConnectionInfo,
    resp3: bool,
    ca: Option<&[u8]>,
) -> Result<redis::Client> {
    let mut info = node.into_connection_info().map_err(map)?;
    if resp3 {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        info = info.set_redis_settings(settings);
    }
    match ca {
        #[cfg(feature = "tls")]
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        )
        .map_err(map),
        _ => redis::Client::open(info).map_err(map),
    }
}

/// How often an event listener pings its server (see [`listen`]).
const LISTENER_PING: Duration = Duration::from_secs(1);

/// The event in a pub/sub message of the store's channel or of an expired key.
fn push_event(push: &PushInfo, session_prefix: &str) -> Option<SessionEvent> {
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    };
    let (channel, payload) = match (&push.kind, push.data.as_slice()) {
        (PushKind::Message, [channel, payload]) => (text(channel)?, text(payload)?),
        (PushKind::PMessage, [_pattern, channel, payload]) => (text(channel)?, text(payload)?),
        _ => return None,
    };
    parse_event(&channel, &payload, session_prefix)
}

/// A published lifecycle message (`c <hex>`, `d <hex>`, `i <old> <new>`) or an expired key of
/// this store.
fn parse_event(channel: &str, payload: &str, session_prefix: &str) -> Option<SessionEvent> {
    if channel.starts_with("__keyevent@") {
        let hex = payload.strip_prefix(session_prefix)?.strip_suffix('}')?;
        return SessionKey::from_hex(hex).map(SessionEvent::Expired);
    }
    let mut words = payload.split(' ');
    let kind = words.next()?;
    let key = SessionKey::from_hex(words.next()?)?;
    match kind {
        "c" => Some(SessionEvent::Created(key)),
        "d" => Some(SessionEvent::Deleted(key)),
        "i" => Some(SessionEvent::IdChanged {
            old: key,
            new: SessionKey::from_hex(words.next()?)?,
        }),
        _ => None,
    }
}
