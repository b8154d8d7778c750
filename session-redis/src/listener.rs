//! Event listeners: the store's own channel (creates, deletes and id changes published by the
//! scripts of every instance) and the servers' expired-key notifications.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use session_core::raw::{with_timeout, EventBus};
use session_core::{Error, Result, SessionEvent, SessionKey};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::map;
use crate::topology::{node_info, slot_ranges, Address, SlotRange};

/// The channel the store's scripts publish lifecycle events on.
pub(crate) fn event_channel(config: &Config) -> String {
    format!("{}events", config.prefix)
}

/// Starts the event listeners of a store and returns whether expiry events are on.
///
/// One pub/sub connection carries the store's own channel (creates, deletes and id changes
/// published by the scripts of every instance; on a Cluster, classic pub/sub reaches every
/// node, so one connection to the first seed that answers is enough, and when that node stops
/// answering the subscription moves to a master that does). Expired keys are
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
/// while no event arrives. Events published while a listener is disconnected or moving, or
/// expired on a new master before the next topology lookup, are lost (pub/sub keeps nothing).
/// The listeners end when the store is dropped.
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
            .map(|(listener, _)| (info, listener));
        if first.is_ok() {
            break;
        }
    }
    let (seed, mut channel_listener) = first?;
    let known = cluster_masters(&mut channel_listener, context.timeout).await?;
    let mut masters = HashMap::new();
    let mut expiry = true;
    for address in &known {
        let info = node_info(&seed, address);
        let (listener, on) = context.listen_on(info, None, Expiry::IfOn).await?;
        expiry &= on;
        masters.insert(address.clone(), listener);
    }
    if !expiry {
        masters.values().for_each(|listener| listener.task.abort());
        masters.clear();
    }
    let mut listeners = ClusterListeners {
        context,
        channel,
        seed,
        channel_listener,
        masters,
        expiry,
        known,
    };
    tokio::spawn(async move {
        let mut stopped = listeners.context.stopped.clone();
        let mut refresh = tokio::time::interval(TOPOLOGY_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = refresh.tick() => listeners.refresh().await,
                _ = stopped.changed() => return,
            }
        }
    });
    Ok(expiry)
}

/// A Cluster store's listeners, kept in step with the cluster every [`TOPOLOGY_REFRESH`].
struct ClusterListeners {
    context: Context,
    channel: String,
    /// The seed whose connection settings (credentials, TLS) every node connection copies.
    seed: ConnectionInfo,
    /// The connection subscribed to the store's channel: any node will do, as long as it
    /// answers.
    channel_listener: Listener,
    /// Expired-key listeners by master; none when expiry events are off.
    masters: HashMap<Address, Listener>,
    expiry: bool,
    /// The masters as last looked up.
    known: Vec<Address>,
}

impl ClusterListeners {
    /// Looks the masters up; moves the channel to another node if its node stopped answering;
    /// gives new masters an expired-key listener and lets go of nodes that are no longer
    /// masters. What fails is tried again at the next refresh.
    async fn refresh(&mut self) {
        let timeout = self.context.timeout;
        let mut lookup = cluster_masters(&mut self.channel_listener, timeout).await;
        for listener in self.masters.values_mut() {
            if lookup.is_ok() {
                break;
            }
            lookup = cluster_masters(listener, timeout).await;
        }
        if let Ok(masters) = lookup {
            self.known = masters;
            if self.expiry {
                self.follow_masters().await;
            }
        }
        if !self.channel_listener.answering() {
            self.move_channel().await;
        }
    }

    async fn follow_masters(&mut self) {
        let known = &self.known;
        self.masters.retain(|address, listener| {
            let master = known.contains(address);
            if !master {
                listener.task.abort();
            }
            master
        });
        for address in &self.known {
            if self.masters.contains_key(address) {
                continue;
            }
            let info = node_info(&self.seed, address);
            if let Ok((listener, _)) = self.context.listen_on(info, None, Expiry::Always).await {
                self.masters.insert(address.clone(), listener);
            }
        }
    }

    /// Subscribes the channel on the first known master that accepts, and closes the old
    /// subscription.
    async fn move_channel(&mut self) {
        for address in &self.known {
            let info = node_info(&self.seed, address);
            if info.addr() == self.channel_listener.info.addr() {
                continue;
            }
            let subscribed = self
                .context
                .listen_on(info, Some(&self.channel), Expiry::Off)
                .await;
            if let Ok((listener, _)) = subscribed {
                std::mem::replace(&mut self.channel_listener, listener)
                    .task
                    .abort();
                return;
            }
        }
    }
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

/// A listener: its node, its connection (for other commands) and the task forwarding its
/// events, which runs until the store is dropped or the task is aborted.
struct Listener {
    info: ConnectionInfo,
    manager: ConnectionManager,
    task: tokio::task::JoinHandle<()>,
    /// Whether the node answered the listener's last ping.
    answering: Arc<AtomicBool>,
}

impl Listener {
    fn answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed)
    }
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
        let client = node_client(info.clone(), true, self.ca.as_deref())?;
        let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
        let mut manager = client
            .get_connection_manager_with_config(
                // Few retries per reconnect: the pings drive further attempts, and a dead seed
                // must not use up `open`'s time before the next one is tried.
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
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
        let answering = Arc::new(AtomicBool::new(true));
        let answered = Arc::clone(&answering);
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
                        let ping_cmd = redis::cmd("PING");
                        let pong = ping_cmd.query_async::<()>(&mut pinged);
                        let pong = tokio::time::timeout(LISTENER_PING, pong).await;
                        answered.store(matches!(pong, Ok(Ok(()))), Ordering::Relaxed);
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Ok((
            Listener {
                info,
                manager,
                task,
                answering,
            },
            expiry,
        ))
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
/// unknown endpoint is the node asked). Bounded by `timeout` also while the connection waits
/// for a reconnect to a node that is gone.
async fn cluster_masters(listener: &mut Listener, timeout: Duration) -> Result<Vec<Address>> {
    let slots: Value = with_timeout(timeout, async {
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut listener.manager)
            .await
            .map_err(map)
    })
    .await?;
    let asked = match listener.info.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.as_str(),
        _ => "",
    };
    let mut masters = Vec::new();
    for SlotRange { master, .. } in slot_ranges(&slots, asked)? {
        if !masters.contains(&master) {
            masters.push(master);
        }
    }
    Ok(masters)
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
