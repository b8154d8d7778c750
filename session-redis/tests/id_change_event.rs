//! `change_id` when its IdChanged announcement cannot be published: the rotation has happened,
//! so the call succeeds and the session holds the new id (the announcement is best-effort).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis;
use session_redis::{Config, RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_announcement_does_not_fail_the_rotation() {
    let Some((store, mut connection, prefix)) =
        common::store_and_connection("nopub", SessionSettings::default()).await
    else {
        return;
    };
    // A user that may do everything but PUBLISH outside scripts' keys: the rotation's own
    // writes work, its announcement is refused (NOPERM).
    let user = format!("nopub{}", std::process::id());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg("nopass")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-publish")
        .query_async(&mut connection)
        .await
        .expect("ACL SETUSER");
    let url = store.config().nodes[0].replacen("redis://", &format!("redis://{user}:any@"), 1);
    let restricted = RedisStore::open(
        Config::from_url(&url).unwrap().with_prefix(prefix),
        SessionSettings::default(),
    )
    .await
    .expect("store as the restricted user");

    let mut session = store.new_session();
    session.insert("cart", "book").unwrap();
    store.create(&mut session).await.unwrap();
    let old = session.id().clone();

    restricted
        .change_id(&mut session)
        .await
        .expect("the rotation succeeds even though its event cannot be published");
    assert_ne!(session.id(), &old);
    assert!(store.find(&old).await.unwrap().is_none(), "old id gone");
    let moved = store
        .find(session.id())
        .await
        .unwrap()
        .expect("new id live");
    assert_eq!(
        moved.get::<String>("cart").unwrap().as_deref(),
        Some("book")
    );
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut connection)
        .await
        .expect("ACL DELUSER");
}
