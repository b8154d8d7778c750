//! Two "service instances" share one session store: a login on one is visible on the other,
//! and "log out everywhere" ends it on both. On the in-memory store the instances are two
//! handles in one process; with a shared store (Redis, SQL) they are two processes or hosts.
//!
//! ```text
//! cargo run -p session-memory --example two_instances
//! ```

use std::sync::Arc;

use session_core::{SessionId, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_memory::{Config, MemoryStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> session_core::Result<()> {
    let store = MemoryStore::open(Config::default(), SessionSettings::default());
    let instance_a: Arc<dyn SessionRepository> = Arc::new(store.clone());
    let instance_b: Arc<dyn SessionRepository> = Arc::new(store);

    // Request 1 lands on instance A: the user logs in.
    let mut session = instance_a.new_session();
    session.insert("cart", &vec!["book"])?;
    instance_a.create(&mut session).await?;
    session.set_principal(Some("morris"))?;
    instance_a.change_id(&mut session).await?; // a new id at login: no session fixation
    instance_a.save(&mut session).await?;
    let cookie = session.id().expose_secret().to_owned();
    println!(
        "A: morris logged in; the cookie carries a {}-character token ({})",
        cookie.len(),
        session.id()
    );

    // Request 2 carries the cookie and lands on instance B.
    let id: SessionId = cookie
        .parse()
        .map_err(|e| session_core::Error::InvalidInput(format!("{e}")))?;
    let mut seen = instance_b
        .find(&id)
        .await?
        .ok_or(session_core::Error::NotFound)?;
    println!(
        "B: found the session of {:?}, cart {:?}",
        seen.principal(),
        seen.get::<Vec<String>>("cart")?
    );
    seen.insert("theme", "dark")?;
    instance_b.save(&mut seen).await?;

    // Request 3 is back on A and sees B's change.
    let again = instance_a
        .find(&id)
        .await?
        .ok_or(session_core::Error::NotFound)?;
    println!("A: theme set on B is {:?}", again.get::<String>("theme")?);

    // The user's devices, as keys and metadata (never tokens), then "log out everywhere".
    for device in instance_b.find_by_principal("morris").await? {
        println!(
            "B: morris has a session {} expiring at {:?}",
            device.key, device.expires_at
        );
    }
    let ended = instance_b.delete_by_principal("morris").await?;
    println!(
        "B: logged out everywhere ({ended} session); A finds it: {}",
        instance_a.find(&id).await?.is_some()
    );
    Ok(())
}
