//! The principal index: one sorted set per principal, scored by each session's deadline plus a
//! slack (see the `scripts` module), checked against the sessions on every read by core's
//! [`list_principal`](session_core::raw::list_principal), which prunes what is dead.

use session_core::raw::{Lookup, PrincipalIndexIo};
use session_core::{async_trait, Result, SessionKey};
use sha2::{Digest, Sha256};

use crate::error::map;
use crate::scripts;
use crate::store::RedisStore;

impl RedisStore {
    /// The Redis key of `principal`'s index (a sorted set of session key hexes), for tooling.
    /// The principal is hashed, so any text makes a valid key in its own Cluster slot.
    pub fn principal_index_key(&self, principal: &str) -> String {
        let digest = Sha256::digest(principal.as_bytes());
        let mut key = String::with_capacity(self.inner.config.prefix.len() + 36);
        key.push_str(&self.inner.config.prefix);
        key.push_str("p:{");
        for byte in &digest[..16] {
            key.push_str(&format!("{byte:02x}"));
        }
        key.push('}');
        key
    }

    pub(crate) async fn index_add(
        &self,
        principal: &str,
        key: &SessionKey,
        deadline: u64,
    ) -> Result<()> {
        let mut cmd = scripts::call(&scripts::INDEX_ADD, &self.principal_index_key(principal));
        cmd.arg(key.to_hex()).arg(deadline);
        scripts::run::<i64>(&scripts::INDEX_ADD, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        Ok(())
    }

    pub(crate) async fn index_remove(&self, principal: &str, key: &SessionKey) -> Result<()> {
        self.index_remove_member(principal, key.to_hex().as_bytes())
            .await
    }

    async fn index_remove_member(&self, principal: &str, member: &[u8]) -> Result<()> {
        redis::cmd("ZREM")
            .arg(self.principal_index_key(principal))
            .arg(member)
            .query_async::<i64>(&mut self.connection())
            .await
            .map_err(map)?;
        Ok(())
    }
}

#[async_trait]
impl PrincipalIndexIo for RedisStore {
    /// The member as stored: normally a key's hex, but a foreign writer may have left anything.
    type Member = Vec<u8>;

    async fn members(&self, principal: &str) -> Result<Vec<Vec<u8>>> {
        redis::cmd("ZRANGE")
            .arg(self.principal_index_key(principal))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.connection())
            .await
            .map_err(map)
    }

    fn member_key(&self, member: &Vec<u8>) -> Option<SessionKey> {
        SessionKey::from_hex(std::str::from_utf8(member).ok()?)
    }

    async fn lookup(&self, key: &SessionKey, now_ms: u64) -> Result<Lookup> {
        self.lookup_record(key, now_ms).await
    }

    async fn prune(&self, principal: &str, member: &Vec<u8>) -> Result<()> {
        self.index_remove_member(principal, member).await
    }
}
