//! The connection to Redis: one multiplexed, reconnecting connection to a standalone server, or
//! a cluster connection with direct lanes to its masters (the `lanes` module), behind one type;
//! and the TLS trust of `rediss://`.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use session_core::{Error, Result};

use crate::config::Config;
use crate::error::map;
use crate::lanes::Lanes;
use crate::listener::node_client;

/// A standalone connection (multiplexed, reconnecting) or a cluster connection.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster {
        cluster: ClusterConnection,
        lanes: Arc<Lanes>,
    },
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster { cluster, lanes } => Box::pin(lanes.send(cluster, cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster { cluster, lanes } => {
                Box::pin(lanes.send_pipeline(cluster, cmd, offset, count))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster { cluster, .. } => cluster.get_db(),
        }
    }
}

/// The PEM bytes of [`Config::tls_ca_file`], if set.
pub(crate) async fn trusted_ca(config: &Config) -> Result<Option<Vec<u8>>> {
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    if !cfg!(feature = "tls") {
        return Err(Error::Config(
            "a TLS CA file needs the `tls` feature of session-redis".into(),
        ));
    }
    tokio::fs::read(path).await.map(Some).map_err(|error| {
        Error::Config(format!(
            "cannot read the TLS CA file {}: {error}",
            path.display()
        ))
    })
}

/// Connects as [`Config`] says (without a timeout of its own: the caller bounds it).
pub(crate) async fn connect(config: &Config, ca: Option<&[u8]>) -> Result<Connection> {
    let timeout = config.timeout;
    if config.cluster {
        let builder = redis::cluster::ClusterClient::builder(config.nodes.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        #[cfg(feature = "tls")]
        let builder = match ca {
            Some(pem) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            }),
            None => builder,
        };
        let client = builder.build().map_err(map)?;
        let cluster = client.get_async_connection().await.map_err(map)?;
        let seed = config.nodes[0]
            .as_str()
            .into_connection_info()
            .map_err(map)?;
        let lanes = Lanes::open(&cluster, seed, ca, timeout);
        Ok(Connection::Cluster { cluster, lanes })
    } else {
        let client = node_client(config.nodes[0].as_str(), false, ca)?;
        let manager = client
            .get_connection_manager_with_config(
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1),
            )
            .await
            .map_err(map)?;
        Ok(Connection::Single(manager))
    }
}
