//! Wall-clock helpers. Stores persist instants as milliseconds since the Unix epoch, computed on
//! the application instance, so every store applies the same deadline to the same session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_millis)
}

/// A duration in whole milliseconds, saturating.
pub fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The instant `millis` after the Unix epoch.
pub fn system_time(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// `deadline = min(last_accessed + idle_timeout, created + absolute_lifetime)`, in epoch
/// milliseconds. A session is live strictly before its deadline.
pub fn deadline_millis(
    created_at: u64,
    last_accessed_at: u64,
    idle_timeout: u64,
    absolute_lifetime: Option<u64>,
) -> u64 {
    let idle = last_accessed_at.saturating_add(idle_timeout);
    match absolute_lifetime {
        Some(lifetime) => idle.min(created_at.saturating_add(lifetime)),
        None => idle,
    }
}
