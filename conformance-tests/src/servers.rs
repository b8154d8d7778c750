//! Server provisioning.
