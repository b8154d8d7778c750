//! The principal listing and log-out-everywhere, for stores that keep their own index.

use std::future::Future;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::SessionKey;
use crate::raw::time::now_millis;
use crate::record::{SessionInfo, SessionRecord};
use crate::session::validate_principal;
use crate::settings::SessionSettings;

/// Validates a principal name given to a lookup, with the limits of `settings`.
pub fn check_principal_query(principal: &str, settings: &SessionSettings) -> Result<()> {
    validate_principal(principal, settings.limits.max_principal_len)
}

/// The I/O of a store whose principal index is a separate structure (a set per principal)
/// that may hold stale members; [`list_principal`] applies the rules.
#[async_trait]
pub trait PrincipalIndexIo: Send + Sync {
    /// A member as the index stores it (a key, or the text the server holds).
    type Member: Send + Sync;

    /// The members of `principal`'s index.
    async fn members(&self, principal: &str) -> Result<Vec<Self::Member>>;

    /// The session key a member names; `None` for a malformed member.
    fn member_key(&self, member: &Self::Member) -> Option<SessionKey>;

    /// The record of `key` if it is live at `now_ms` and decodable.
    async fn load_live(&self, key: &SessionKey, now_ms: u64) -> Result<Option<SessionRecord>>;

    /// Removes `member` from `principal`'s index.
    async fn prune(&self, principal: &str, member: &Self::Member) -> Result<()>;
}

/// `find_by_principal` by the contract: checks the name, lists the members, keeps the live
/// sessions whose principal is exactly `principal`, prunes members that are malformed or whose
/// session is gone (so the index cannot leak), and sorts by creation time.
///
/// A live session that now belongs to another principal is left out but not pruned: the save
/// that moved it maintains both indexes, and pruning here could race a move back.
pub async fn list_principal<I>(
    index: &I,
    principal: &str,
    settings: &SessionSettings,
) -> Result<Vec<SessionInfo>>
where
    I: PrincipalIndexIo + ?Sized,
{
    check_principal_query(principal, settings)?;
    let now = now_millis();
    let mut found = Vec::new();
    for member in index.members(principal).await? {
        let Some(key) = index.member_key(&member) else {
            index.prune(principal, &member).await?;
            continue;
        };
        match index.load_live(&key, now).await? {
            Some(record) if record.principal.as_deref() == Some(principal) => {
                found.extend(record.info(key));
            }
            Some(_) => {}
            None => index.prune(principal, &member).await?,
        }
    }
    found.sort_by_key(|info| info.created_at);
    Ok(found)
}

/// `delete_by_principal` from a listing: deletes each listed key with `delete` (answering
/// whether this call removed it) and counts the removals.
pub async fn delete_listed<F, Fut>(listed: Vec<SessionInfo>, mut delete: F) -> Result<u64>
where
    F: FnMut(SessionKey) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let mut deleted = 0;
    for info in listed {
        if delete(info.key).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}
