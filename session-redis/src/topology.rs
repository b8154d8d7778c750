//! A Redis Cluster's layout as `CLUSTER SLOTS` describes it: which master serves which slots,
//! and the connection settings of a node the seed did not name. The event listeners follow the
//! masters with it, and the store's direct lanes (the `lanes` module) route by it.

use redis::{ConnectionAddr, ConnectionInfo, Value};
use session_core::{Error, Result};

/// A node's address as `CLUSTER SLOTS` names it.
pub(crate) type Address = (String, u16);

/// Slots `first..=last`, served by `master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) master: Address,
}

/// The slot ranges of a `CLUSTER SLOTS` reply. A master with an unknown endpoint (empty or `?`)
/// is `asked`, the node that answered. Entries of another shape are skipped; a reply with no
/// master at all is an error.
pub(crate) fn slot_ranges(slots: &Value, asked: &str) -> Result<Vec<SlotRange>> {
    let Value::Array(entries) = slots else {
        return Err(Error::backend("CLUSTER SLOTS: not an array"));
    };
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(entry) = entry else { continue };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (entry.first(), entry.get(1), entry.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) if !host.is_empty() && host != b"?" => {
                String::from_utf8_lossy(host).into_owned()
            }
            _ => asked.to_owned(),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let (Ok(first), Ok(last), Ok(port)) = (
            u16::try_from(*first),
            u16::try_from(*last),
            u16::try_from(*port),
        ) else {
            continue;
        };
        if first <= last {
            ranges.push(SlotRange {
                first,
                last,
                master: (host, port),
            });
        }
    }
    if ranges.is_empty() {
        return Err(Error::backend("CLUSTER SLOTS: no master"));
    }
    Ok(ranges)
}

/// `seed`'s connection settings (credentials, TLS) for another node.
pub(crate) fn node_info(seed: &ConnectionInfo, (host, port): &Address) -> ConnectionInfo {
    let (host, port) = (host.clone(), *port);
    let addr = match seed.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    seed.clone().set_addr(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &[u8], port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn reads_ranges_and_fills_unknown_hosts_with_the_node_asked() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node(b"10.0.0.1", 7000),
                node(b"10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node(b"", 7001)]),
            Value::Array(vec![Value::Int(3), Value::Int(2), node(b"x", 1)]),
            Value::Array(vec![Value::Int(-1), Value::Int(2), node(b"x", 1)]),
            Value::Int(7),
        ]);
        let ranges = slot_ranges(&reply, "127.0.0.1").unwrap();
        assert_eq!(
            ranges,
            [
                SlotRange {
                    first: 0,
                    last: 5460,
                    master: ("10.0.0.1".into(), 7000)
                },
                SlotRange {
                    first: 5461,
                    last: 16383,
                    master: ("127.0.0.1".into(), 7001)
                },
            ]
        );
        assert!(slot_ranges(&Value::Array(vec![]), "h").is_err());
        assert!(slot_ranges(&Value::Nil, "h").is_err());
    }
}
