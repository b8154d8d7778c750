//! The save: one script call that either stores the client's record (nobody wrote since the
//! load) or merges the delta on the server, and a typed reply.

use redis::Value;
use session_core::raw::time::now_millis;
use session_core::raw::SessionInternals;
use session_core::{Error, Result, Session};

use crate::error::map;
use crate::meta::{index_score, words, Meta};
use crate::scripts;
use crate::store::RedisStore;

impl RedisStore {
    pub(crate) async fn save_now(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let key = session.key();
        let limits = &self.settings.limits;
        // The stored session after this save, if nobody wrote or touched it since this copy
        // was loaded: then the script takes the fast path and stores exactly this.
        let mut saved = session.snapshot(now)?;
        saved.version += 1;
        let meta = Meta::of(&saved);
        let delta = session.delta(now)?;
        // Principal changes need the old principal's index entry, timeout changes the old
        // timeouts for the liveness check: both take the merging path.
        let fast = delta.principal.is_none()
            && delta.idle_timeout_ms.is_none()
            && delta.absolute_lifetime_ms.is_none()
            && session.deadline_ms() > now
            && usize::try_from(meta.size).is_ok_and(|size| size <= limits.max_session_bytes)
            && usize::try_from(meta.count).is_ok_and(|count| count <= limits.max_attributes);
        let pairs: usize = delta
            .upserts
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let removed: usize = delta.removals.iter().map(|name| name.len()).sum();
        let mut cmd = scripts::call_sized(
            &scripts::SAVE,
            &self.session_key(&key),
            7 + 2 * delta.upserts.len() + delta.removals.len(),
            256 + pairs + removed,
        );
        if fast {
            let mut prefix = String::with_capacity(48);
            words(
                &mut prefix,
                &[
                    Some(session.version()),
                    Some(session.created_at_ms()),
                    Some(session.last_accessed_at_ms()),
                ],
            );
            prefix.push(' ');
            cmd.arg(prefix).arg(saved.deadline_ms());
            match saved.principal {
                Some(_) => cmd.arg(index_score(&saved)),
                None => cmd.arg(""),
            };
        } else {
            cmd.arg("").arg("").arg("");
        }
        cmd.arg(delta.removals.len());
        // The merging path's parameters, in one argument (see the script).
        let (absolute_op, absolute) = match delta.absolute_lifetime_ms {
            None => (None, None),
            Some(None) => (Some(0), None),
            Some(Some(lifetime)) => (Some(1), Some(lifetime)),
        };
        let mut merge = String::with_capacity(96);
        words(
            &mut merge,
            &[
                Some(now),
                delta.expected_version,
                u64::try_from(limits.max_session_bytes).ok(),
                u64::try_from(limits.max_attributes).ok(),
                delta.idle_timeout_ms,
                absolute_op,
                absolute,
            ],
        );
        match delta.principal {
            None => merge.push_str(" -"),
            Some(None) => merge.push_str(" 0"),
            Some(Some(principal)) => {
                merge.push_str(" 1 ");
                merge.push_str(principal);
            }
        }
        cmd.arg(merge);
        for name in &delta.removals {
            cmd.arg(*name);
        }
        for (name, value) in &delta.upserts {
            cmd.arg(*name).arg(&value[..]);
        }
        cmd.arg(Meta::FIELD).arg(meta.to_field());
        drop(delta);
        let reply: Value = scripts::run(&scripts::SAVE, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        match SaveReply::parse(reply)? {
            SaveReply::Stored { index_score } => {
                session.mark_persisted(saved.version, now);
                self.remember_as(&key, meta, &saved);
                if let (Some(principal), 1..) = (&saved.principal, index_score) {
                    self.index_add(principal, &key, index_score).await?;
                }
                Ok(())
            }
            SaveReply::Merged {
                version,
                old_principal,
                new_principal,
                index_score,
            } => {
                // The stored session was the one this save started from exactly when the
                // version moved by one: the stored result is then `saved`, as on the fast path.
                if version == saved.version {
                    self.remember_as(&key, meta, &saved);
                } else {
                    self.forget(&key);
                }
                session.mark_persisted(version, now);
                if old_principal != new_principal {
                    if let Some(old) = &old_principal {
                        self.index_remove(old, &key).await?;
                    }
                }
                if let (Some(new), 1..) = (&new_principal, index_score) {
                    self.index_add(new, &key, index_score).await?;
                }
                Ok(())
            }
            SaveReply::NotFound => {
                self.forget(&key);
                Err(Error::NotFound)
            }
            SaveReply::Conflict { actual } => {
                self.forget(&key);
                Err(Error::Conflict {
                    expected: session.version(),
                    actual,
                })
            }
            SaveReply::TooLarge { size, count } => Err(if count > limits.max_attributes {
                Error::TooLarge {
                    what: "attribute count",
                    actual: count,
                    limit: limits.max_attributes,
                }
            } else {
                Error::TooLarge {
                    what: "encoded session size",
                    actual: size,
                    limit: limits.max_session_bytes,
                }
            }),
        }
    }
}

/// What the save script answered (its reply encoding is in the `scripts` module).
#[derive(Debug, PartialEq, Eq)]
enum SaveReply {
    /// Fast path: the client's record is stored; the index needs the session again with this
    /// score (0: it does not).
    Stored { index_score: u64 },
    /// Merged on the server into the stored session, which is now at `version`.
    Merged {
        version: u64,
        old_principal: Option<String>,
        new_principal: Option<String>,
        index_score: u64,
    },
    /// The session is not live.
    NotFound,
    /// Optimistic mode: the stored version is `actual`.
    Conflict { actual: u64 },
    /// The merged session would exceed a limit.
    TooLarge { size: usize, count: usize },
}

impl SaveReply {
    /// The script replies an integer (fast path: the index score) or an array whose first
    /// element is the new version, or -1 not found, -2 conflict, -3 too large.
    fn parse(reply: Value) -> Result<Self> {
        let reply = match reply {
            Value::Int(score) => {
                return Ok(SaveReply::Stored {
                    index_score: u64::try_from(score).unwrap_or(0),
                })
            }
            Value::Array(reply) => reply,
            other => return Err(unexpected(&other)),
        };
        let int = |i: usize| match reply.get(i) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let unsigned = |i: usize| int(i).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        let size = |i: usize| int(i).and_then(|v| usize::try_from(v).ok()).unwrap_or(0);
        let text = |i: usize| match reply.get(i) {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        };
        Ok(match int(0) {
            Some(-1) => SaveReply::NotFound,
            Some(-2) => SaveReply::Conflict {
                actual: unsigned(1),
            },
            Some(-3) => SaveReply::TooLarge {
                size: size(1),
                count: size(2),
            },
            Some(version @ 1..) => SaveReply::Merged {
                version: u64::try_from(version).unwrap_or(0),
                old_principal: text(2),
                new_principal: text(3),
                index_score: unsigned(4),
            },
            _ => return Err(unexpected(&Value::Array(reply))),
        })
    }
}

fn unexpected(reply: &Value) -> Error {
    Error::backend(format!("unexpected reply from the save script: {reply:?}"))
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::SaveReply;

    #[test]
    fn replies_are_typed() {
        assert_eq!(
            SaveReply::parse(Value::Int(0)).unwrap(),
            SaveReply::Stored { index_score: 0 }
        );
        assert_eq!(
            SaveReply::parse(Value::Array(vec![Value::Int(-2), Value::Int(7)])).unwrap(),
            SaveReply::Conflict { actual: 7 }
        );
        assert_eq!(
            SaveReply::parse(Value::Array(vec![
                Value::Int(5),
                Value::Int(0),
                Value::BulkString(b"old".to_vec()),
                Value::Nil,
                Value::Int(0),
            ]))
            .unwrap(),
            SaveReply::Merged {
                version: 5,
                old_principal: Some("old".into()),
                new_principal: None,
                index_score: 0
            }
        );
        assert!(SaveReply::parse(Value::Array(vec![Value::Int(-9)])).is_err());
        assert!(SaveReply::parse(Value::Nil).is_err());
    }
}
