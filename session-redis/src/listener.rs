//! Event listeners: the store's own channel (creates, deletes and id changes published by the
//! scripts of every instance) and the servers' expired-key notifications.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use session_core::{EventBus, Result, SessionEvent, SessionKey};

use crate::config::Config;
use crate::error::map;

/// The channel the store's scripts publish lifecycle events on.
pub(crate) fn event_channel(config: &Config) -> String {
    format!("{}events", config.prefix)
}

/// Starts the event listeners of a store and returns whether expiry events are on.
///
/// One pub/sub connection to the first node carries the store's own channel (creates, deletes
/// and id changes published by the scripts of every instance; on a Cluster, classic pub/sub
/// reaches every node). Where the server has keyspace notifications for expired keys enabled
/// (`notify-keyspace-events` with `E` and `x`, or `A`), each configured node also reports the
/// session keys it expires. Subscriptions are confirmed before this returns, so no event after
/// `open` is missed.
///
/// The listeners are RESP3 connection managers (Redis 6 or later): when a connection breaks
/// (server restart, failover) they reconnect and subscribe again by themselves; a ping every
/// [`LISTENER_PING`] makes a broken connection noticed, and a failed reconnect retried, even
/// while no event arrives. Events published while a listener is disconnected are lost (pub/sub
/// keeps nothing). A listener ends when the store is dropped.
pub(crate) async fn listen(
    config: &Config,
    ca: Option<&[u8]>,
    events: &EventBus,
    stopped: tokio::sync::watch::Receiver<()>,
) -> Result<bool> {
    let mut expiry_everywhere = true;
    for (index, node) in config.nodes.iter().enumerate() {
        let client = node_client(node, true, ca)?;
        let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
        let mut manager = client
            .get_connection_manager_with_config(
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_push_sender(sender)
                    .set_automatic_resubscription(),
            )
            .await
            .map_err(map)?;
        // Managed services may refuse CONFIG: then no expiry events are assumed. The reply is
        // a map on this RESP3 connection and a flat array on RESP2; HashMap reads both.
        let notifications: HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut manager)
            .await
            .unwrap_or_default();
        let flags = notifications
            .get("notify-keyspace-events")
            .cloned()
            .unwrap_or_default();
        let expiry = flags.contains('E') && (flags.contains('x') || flags.contains('A'));
        expiry_everywhere &= expiry;
        if index > 0 && !expiry {
            continue;
        }
        if index == 0 {
            manager
                .subscribe(event_channel(config))
                .await
                .map_err(map)?;
        }
        if expiry {
            manager
                .psubscribe("__keyevent@*__:expired")
                .await
                .map_err(map)?;
        }
        let session_prefix = format!("{}s:{{", config.prefix);
        let events = events.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
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
                        let _ = redis::cmd("PING").query_async::<()>(&mut manager).await;
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
    }
    Ok(expiry_everywhere)
}

/// A client for one node, speaking RESP3 if `resp3` (the event listeners), trusting `ca`
/// (PEM) instead of the system's trust store when given.
pub(crate) fn node_client(node: &str, resp3: bool, ca: Option<&[u8]>) -> Result<redis::Client> {
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
