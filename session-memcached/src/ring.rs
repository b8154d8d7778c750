//! Which server holds a session: rendezvous (highest random weight) hashing, so that adding or
//! removing a server moves only the sessions that server gains or loses.
//!
//! The weight of a server for a key is the first 8 bytes of SHA-256(server ‖ 0x00 ‖ key), a
//! function whose output is fixed by its standard: placements never change across releases or
//! platforms (the test pins some).

use sha2::{Digest, Sha256};

/// The index in `servers` of the server that holds `key`.
pub(crate) fn pick(servers: &[String], key: &[u8]) -> usize {
    // One server holds everything: no hash (two SHA-256 per cycle otherwise).
    if servers.len() == 1 {
        return 0;
    }
    let mut best = (0, 0u64);
    for (index, server) in servers.iter().enumerate() {
        let mut hasher = Sha256::new();
        hasher.update(server.as_bytes());
        hasher.update([0]);
        hasher.update(key);
        let digest = hasher.finalize();
        let mut weight = [0u8; 8];
        weight.copy_from_slice(&digest[..8]);
        let weight = u64::from_be_bytes(weight);
        if index == 0 || weight > best.1 {
            best = (index, weight);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::pick;

    fn servers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn placements_are_pinned() {
        let three = servers(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let placed: Vec<usize> = (0u8..12).map(|k| pick(&three, &[k; 32])).collect();
        assert_eq!(placed, PINNED);
    }

    /// Computed independently (Python's hashlib, the same definition); a change here would
    /// move live sessions to servers that do not have them.
    const PINNED: [usize; 12] = [2, 1, 1, 2, 0, 0, 1, 0, 0, 1, 0, 1];

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let three = servers(&["a:1", "b:1", "c:1"]);
        let two = servers(&["a:1", "c:1"]);
        let mut counts = [0usize; 3];
        for k in 0u16..3000 {
            let key = k.to_be_bytes();
            let before = pick(&three, &key);
            counts[before] += 1;
            let after = pick(&two, &key);
            if before != 1 {
                assert_eq!(
                    two[after], three[before],
                    "a key of a surviving server moved"
                );
            }
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread {counts:?}");
        }
    }
}
