//! What the fault cases need from whoever runs the store's server.

use std::fmt;

use async_trait::async_trait;

/// The boxed error of a [`ServerControl`] action.
pub type ControlError = Box<dyn std::error::Error + Send + Sync>;

/// Control over a server that a fault case may crash and freeze: a process the test started,
/// a container, a VM. Implement it in your own harness to run
/// [`faults`](crate::faults) against your store's server; this workspace's harness implements
/// it for server processes and Docker containers.
#[async_trait]
pub trait ServerControl: Send + Sync + fmt::Debug {
    /// Where a store connects to the server (its URL, in the store's own scheme).
    fn url(&self) -> String;

    /// Kills the server abruptly (a crash, not a clean shutdown) and returns once it is gone.
    async fn stop(&self) -> Result<(), ControlError>;

    /// Starts a stopped server again at the same address and returns once it accepts work.
    async fn start(&self) -> Result<(), ControlError>;

    /// Freezes the server: connections stay open, nothing answers (a hung server).
    async fn pause(&self) -> Result<(), ControlError>;

    /// Lets a paused server run again.
    async fn resume(&self) -> Result<(), ControlError>;
}
