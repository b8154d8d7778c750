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
        self.run(Operation::Save, async {
            let _turn = self.inner.write_turn().await;
            sqlx::query(&self.inner.sql.write_raw)
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
        self.run(Operation::Save, async {
            let _turn = self.inner.write_turn().await;
            sqlx::query(&self.inner.sql.write_raw_principal)
                .bind(vec![0xffu8, 0xfe, b'x'])
                .bind(key.as_bytes().to_vec())
                .execute(&self.inner.pool)
                .await
                .map_err(map)?;
            Ok(())
        })
        .await
    }
}
