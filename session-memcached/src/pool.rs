//! A small pool of connections per server (deadpool over async-memcached's single-connection
//! client): a connection that an interrupted operation left closed is dropped, not reused.

use std::future::Future;

use async_memcached::{Client, Error as ClientError};
use deadpool::managed::{Metrics, Object, Pool, PoolError, RecycleError, RecycleResult};
use futures_util::TryFutureExt;
use session_core::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::map;

/// Opens connections to one server.
#[derive(Debug)]
pub(crate) struct Connector {
    address: String,
}

impl deadpool::managed::Manager for Connector {
    type Type = Client;
    type Error = ClientError;

    async fn create(&self) -> Result<Client, ClientError> {
        // Boxed: the pool's checkout future embeds this one (twice, under deadpool's timeout),
        // and every checkout allocates and moves that future whole, though connecting is rare.
        Box::pin(Client::new(format!("tcp://{}", self.address))).await
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<ClientError> {
        if client.is_closed() {
            Err(RecycleError::message("the connection was closed"))
        } else {
            Ok(())
        }
    }
}

/// One server: its address and its connections.
pub(crate) struct Server {
    pub(crate) address: String,
    pool: Pool<Connector>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// No timeouts of the pool's own: every checkout happens inside a store operation, which
    /// the store's `Runner` bounds as a whole (waiting for a connection, connecting, the
    /// command). Pool timeouts would arm a second timer for every checkout that waits, which
    /// is most of them whenever the tasks outnumber the connections.
    pub(crate) fn new(address: &str, size: usize) -> Result<Self> {
        let pool = Pool::builder(Connector {
            address: address.to_owned(),
        })
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|error| Error::Config(format!("memcached pool for {address}: {error}")))?;
        Ok(Server {
            address: address.to_owned(),
            pool,
        })
    }

    /// A connection; a server that cannot be reached is `Unavailable` naming it. Not an
    /// `async fn`: one would hold the pool's checkout future (a kilobyte) in its own state
    /// and copy it there on every call.
    pub(crate) fn connection(&self) -> impl Future<Output = Result<Object<Connector>>> + '_ {
        self.pool.get().map_err(|error| match error {
            PoolError::Backend(error) => map(error),
            other => Error::unavailable(format!("memcached {}: {other}", self.address)),
        })
    }

    /// The server's `item_size_max` from `stats settings` (async-memcached sends only
    /// `stats`), or `None` if it does not say.
    pub(crate) async fn item_size_max(&self) -> Result<Option<usize>> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(Error::unavailable)?;
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(b"stats settings\r\n")
            .await
            .map_err(Error::unavailable)?;
        let mut line = String::new();
        loop {
            line.clear();
            if stream
                .read_line(&mut line)
                .await
                .map_err(Error::unavailable)?
                == 0
            {
                return Ok(None);
            }
            let line = line.trim_end();
            if line == "END" {
                return Ok(None);
            }
            if let Some(value) = line.strip_prefix("STAT item_size_max ") {
                return Ok(value.parse().ok());
            }
        }
    }
}
