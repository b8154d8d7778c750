//! Hooks for tests (feature `testing`): raw writes of what a foreign or broken writer could
//! leave where a session is kept.

use session_core::Error;
use session_core::{async_trait, Operation, Result, SessionKey};

use crate::error::map;
use crate::store::SqlStore;

#[async_trait]
impl session_core::testing::WriteRaw for SqlStore {
    /// Replaces the stored attributes of `key` by `bytes`, as a foreign writer would (the
    /// version moves), without any check.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.overwrite(&self.inner.sql.write_raw, bytes, key).await
    }
}

#[async_trait]
impl session_core::testing::WriteRawShape for SqlStore {
    /// [`RawShape::InvalidUtf8Principal`](session_core::testing::RawShape): the principal
    /// column gets bytes that are not UTF-8 (a row holds no other foreign shape).
    async fn write_raw_shape(
        &self,
        key: &SessionKey,
        shape: session_core::testing::RawShape,
    ) -> Result<()> {
        if shape != session_core::testing::RawShape::InvalidUtf8Principal {
            return Err(Error::Unsupported("this raw shape on SQL"));
        }
        let not_utf8 = [0xffu8, 0xfe, b'x'];
        self.overwrite(&self.inner.sql.write_raw_principal, &not_utf8, key)
            .await
    }
}

impl SqlStore {
    /// Runs one of the raw-write statements (`UPDATE … SET <column> = $1, version = version
    /// + 1 WHERE session_key = $2`) with `bytes`.
    async fn overwrite(&self, statement: &str, bytes: &[u8], key: &SessionKey) -> Result<()> {
        self.run(Operation::Save, async {
            let _turn = self.inner.write_turn().await;
            sqlx::query(statement)
                .bind(bytes.to_vec())
                .bind(key.as_bytes().to_vec())
                .execute(&self.inner.pool)
                .await
                .map_err(map)?;
            Ok(())
        })
        .await
    }
}
