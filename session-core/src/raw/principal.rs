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

/// What a store holds for a key, as the principal algorithms need to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live, decodable session.
    Live(SessionRecord),
    /// Nothing, or a session past its deadline.
    Absent,
    /// Stored data `find` cannot read (reported with `report_undecodable`): absent for every
    /// method, but still on the server until deleted or expired.
    Undecodable,
}

impl Lookup {
    /// The live record, if any.
    pub fn live(self) -> Option<SessionRecord> {
        match self {
            Lookup::Live(record) => Some(record),
            Lookup::Absent | Lookup::Undecodable => None,
        }
    }
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

    /// What the store holds for `key` at `now_ms`.
    async fn lookup(&self, key: &SessionKey, now_ms: u64) -> Result<Lookup>;

    /// Removes `member` from `principal`'s index.
    async fn prune(&self, principal: &str, member: &Self::Member) -> Result<()>;
}

/// `find_by_principal` by the contract: checks the name, lists the members, keeps the live
/// sessions whose principal is exactly `principal`, prunes members that are malformed or whose
/// session is gone (so the index cannot leak), and sorts by creation time.
///
/// Left out but not pruned: a live session that now belongs to another principal (the save
/// that moved it maintains both indexes, and pruning here could race a move back), and
/// undecodable data (so that log-out-everywhere still finds and removes it).
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
        match index.lookup(&key, now).await? {
            Lookup::Live(record) if record.principal.as_deref() == Some(principal) => {
                found.extend(record.info(key));
            }
            // Kept in the index, so that log-out-everywhere finds and removes it.
            Lookup::Live(_) | Lookup::Undecodable => {}
            Lookup::Absent => index.prune(principal, &member).await?,
        }
    }
    found.sort_by_key(|info| info.created_at);
    Ok(found)
}

/// `delete_by_principal` for a store with its own index ("log out everywhere"): deletes every
/// live session of `principal` and every undecodable one its index names (a corrupt record, a
/// foreign value at the key) and counts them; also deletes what is past its deadline, so that
/// nothing of the principal's is left on the server; prunes malformed members. A live session
/// that now belongs to another principal is left alone. `delete` answers whether it removed
/// something.
pub async fn delete_principal<I, F, Fut>(
    index: &I,
    principal: &str,
    settings: &SessionSettings,
    mut delete: F,
) -> Result<u64>
where
    I: PrincipalIndexIo + ?Sized,
    F: FnMut(SessionKey) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    check_principal_query(principal, settings)?;
    let now = now_millis();
    let mut deleted = 0;
    for member in index.members(principal).await? {
        let Some(key) = index.member_key(&member) else {
            index.prune(principal, &member).await?;
            continue;
        };
        match index.lookup(&key, now).await? {
            Lookup::Live(record) if record.principal.as_deref() == Some(principal) => {
                if delete(key).await? {
                    deleted += 1;
                }
            }
            Lookup::Live(_) => {}
            Lookup::Undecodable => {
                if delete(key).await? {
                    deleted += 1;
                }
                index.prune(principal, &member).await?;
            }
            Lookup::Absent => {
                delete(key).await?;
                index.prune(principal, &member).await?;
            }
        }
    }
    Ok(deleted)
}
