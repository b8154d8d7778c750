//! MongoDB-specific behaviour on a real wire server: commands per operation (the driver's
//! command monitoring), the server's own TTL deletion, what a dump of the collection holds,
//! and a server that dies mid-run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use session_conformance::namespace;
use session_core::{Error, SessionId, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_mongo::mongodb::bson::{doc, Document};
use session_mongo::mongodb::event::command::CommandEvent;
use session_mongo::mongodb::event::EventHandler;
use session_mongo::mongodb::options::ClientOptions;
use session_mongo::mongodb::Client;
use session_mongo::{Config, MongoStore};
use session_test_harness::{is_required, provision, Backend, ServerProcess};

async fn server_url() -> Option<String> {
    Some(provision(Backend::MongoDb).await?.url)
}

fn config(url: &str) -> Config {
    Config::from_url(url)
        .unwrap()
        .with_collection(namespace("sessions"))
}

/// A store whose client records the name of every command it sends.
async fn monitored_store(url: &str) -> (MongoStore, Arc<Mutex<Vec<String>>>) {
    let commands = Arc::new(Mutex::new(Vec::new()));
    let mut options = ClientOptions::parse(url).await.unwrap();
    let seen = Arc::clone(&commands);
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            seen.lock().unwrap().push(started.command_name);
        }
    }));
    let client = Client::with_options(options).unwrap();
    let store = MongoStore::open_with_client(client, config(url), SessionSettings::default())
        .await
        .unwrap();
    (store, commands)
}

fn take(commands: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *commands.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_one_command() {
    let Some(url) = server_url().await else {
        return;
    };
    let (store, commands) = monitored_store(&url).await;
    take(&commands);

    let mut session = store.new_session();
    session.insert("user", "morris").unwrap();
    store.create(&mut session).await.unwrap();
    assert_eq!(take(&commands), ["insert"], "create");

    let mut loaded = store.find(session.id()).await.unwrap().unwrap();
    assert_eq!(take(&commands), ["find"], "find");

    loaded.insert("cart", &3).unwrap();
    loaded.remove("user");
    store.save(&mut loaded).await.unwrap();
    assert_eq!(take(&commands), ["update"], "save");

    store.touch(session.id()).await.unwrap();
    assert_eq!(take(&commands), ["update"], "touch");

    store.delete(session.id()).await.unwrap();
    assert_eq!(take(&commands), ["delete"], "delete");

    // A save that lost to another instance's save reads once and writes again.
    let mut first = store.new_session();
    store.create(&mut first).await.unwrap();
    let mut stale = store.find(first.id()).await.unwrap().unwrap();
    first.insert("a", "1").unwrap();
    store.save(&mut first).await.unwrap();
    take(&commands);
    stale.insert("b", "2").unwrap();
    store.save(&mut stale).await.unwrap();
    assert_eq!(
        take(&commands),
        ["update", "find", "update"],
        "merging save"
    );
    let merged = store.find(first.id()).await.unwrap().unwrap();
    assert_eq!(merged.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_deletes_expired_documents_itself() {
    let Some(url) = server_url().await else {
        return;
    };
    let settings = SessionSettings::default().with_idle_timeout(Duration::from_secs(1));
    let store = MongoStore::open(config(&url), settings).await.unwrap();
    let mut session = store.new_session();
    store.create(&mut session).await.unwrap();
    let id = session.key().to_hex();
    let collection = store.collection();
    assert_eq!(
        collection
            .count_documents(doc! { "_id": &id })
            .await
            .unwrap(),
        1
    );
    // The harness's secantusdb sweeps every second; MongoDB's TTL monitor every 60 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    while collection
        .count_documents(doc! { "_id": &id })
        .await
        .unwrap()
        == 1
    {
        assert!(
            Instant::now() < deadline,
            "the TTL index never removed the document"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let indexes: Vec<String> = collection.list_index_names().await.unwrap();
    assert!(
        indexes.iter().any(|name| name == "session_expire_at_ttl"),
        "{indexes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_collection_holds_keys_never_tokens() {
    let Some(url) = server_url().await else {
        return;
    };
    let store = MongoStore::open(config(&url), SessionSettings::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        let mut session = store.new_session();
        session.insert("n", &n).unwrap();
        session.set_principal(Some("alice")).unwrap();
        store.create(&mut session).await.unwrap();
        ids.push(session.id().clone());
        if n % 2 == 0 {
            store.change_id(&mut session).await.unwrap();
            ids.push(session.id().clone());
        }
        session.insert("m", &n).unwrap();
        store.save(&mut session).await.unwrap();
    }
    let dump: Vec<Document> = store
        .collection()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(dump.len(), 20);
    let text = format!("{dump:?}");
    for id in &ids {
        assert!(!text.contains(id.expose_secret()), "a token is in the dump");
    }
    for document in &dump {
        let stored = document.get_str("_id").unwrap();
        assert!(ids.iter().any(|id| id.key().to_hex() == stored));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_costs_at_most_the_timeout_and_the_same_store_recovers() {
    if provision(Backend::MongoDb).await.is_none() {
        assert!(!is_required(Backend::MongoDb));
        return;
    }
    let server = ServerProcess::start(Backend::MongoDb.spec()).await.unwrap();
    let timeout = Duration::from_secs(1);
    let store = MongoStore::open(
        config(&server.url()).with_timeout(timeout),
        SessionSettings::default(),
    )
    .await
    .unwrap();
    let mut session = store.new_session();
    session.insert("a", "1").unwrap();
    session.set_principal(Some("bob")).unwrap();
    store.create(&mut session).await.unwrap();

    server.stop();
    let bound = timeout.mul_f64(1.2);
    let mut copy = session.clone();
    copy.insert("b", "2").unwrap();
    let mut rotated = session.clone();
    let mut fresh = store.new_session();
    let checks: Vec<(&str, Result<(), Error>, Duration)> = vec![
        timed("find", store.find(session.id())).await,
        timed("save", store.save(&mut copy)).await,
        timed("touch", store.touch(session.id())).await,
        timed("create", store.create(&mut fresh)).await,
        timed("change_id", store.change_id(&mut rotated)).await,
        timed("find_by_principal", store.find_by_principal("bob")).await,
        timed("delete_by_principal", store.delete_by_principal("bob")).await,
        timed("delete", store.delete(session.id())).await,
    ];
    for (operation, result, took) in checks {
        assert!(
            matches!(&result, Err(error) if error.is_retryable()),
            "{operation}: {result:?}"
        );
        assert!(took <= bound, "{operation} took {took:?}, bound {bound:?}");
    }

    server.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Whether the session written just before the kill survives is the server's durability
    // (secantusdb loses about the last second of unjournaled writes to a SIGKILL): only the
    // store's recovery is checked.
    loop {
        match store.find(session.id()).await {
            Ok(_) => break,
            Err(error) if error.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the store did not recover: {error:?}"),
        }
    }
    let mut after = store.new_session();
    after.insert("after", "restart").unwrap();
    store.create(&mut after).await.unwrap();
    store.touch(after.id()).await.unwrap();
    let reloaded = store.find(after.id()).await.unwrap().unwrap();
    assert_eq!(
        reloaded.get::<String>("after").unwrap().as_deref(),
        Some("restart")
    );
    assert!(matches!(
        store.touch(&SessionId::generate()).await,
        Err(Error::NotFound)
    ));
}

async fn timed<T>(
    operation: &str,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> (&str, Result<(), Error>, Duration) {
    let started = Instant::now();
    let result = call.await.map(|_| ());
    (operation, result, started.elapsed())
}

/// The two reproductions of the README's "nx-27017" section, run on both wire servers: MongoDB's
/// behaviour on secantusdb, the divergence on nx-27017 (this test fails once nx-27017 stops
/// diverging, and the README and the suite's list must shrink with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nx_27017_divergences_are_what_the_readme_says() {
    for (backend, diverges) in [(Backend::MongoDb, false), (Backend::MongoDbNx, true)] {
        let Some(server) = provision(backend).await else {
            continue;
        };
        let client = Client::with_uri_str(&server.url).await.unwrap();
        let collection = client
            .database("session_test")
            .collection::<Document>(&namespace("divergence"));
        collection
            .insert_one(doc! { "_id": "a", "n": 1 })
            .await
            .unwrap();

        // 1. An update pipeline (MongoDB 4.2+), as a touch sends.
        let pipeline = collection
            .update_one(
                doc! { "_id": "a" },
                vec![doc! { "$set": { "n": { "$add": ["$n", 1] } } }],
            )
            .await;
        assert_eq!(
            pipeline.is_err(),
            diverges,
            "{}: {pipeline:?}",
            backend.name()
        );

        // 2. A date written by `$set`, as a save writes `expireAt`.
        collection
            .update_one(
                doc! { "_id": "a" },
                doc! { "$set": { "at": session_mongo::mongodb::bson::DateTime::now() } },
            )
            .await
            .unwrap();
        let dated = collection
            .count_documents(doc! { "_id": "a", "at": { "$type": "date" } })
            .await
            .unwrap();
        assert_eq!(dated == 0, diverges, "{}: the $set date", backend.name());

        // 3. A date later in the current second, filtered with `$gt: now` as every read does.
        let start_of_a_second = async {
            while session_mongo::mongodb::bson::DateTime::now().timestamp_millis() % 1000 > 100 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        start_of_a_second.await;
        let inserted = session_mongo::mongodb::bson::DateTime::now();
        let later =
            session_mongo::mongodb::bson::DateTime::from_millis(inserted.timestamp_millis() + 800);
        collection
            .insert_one(doc! { "_id": "b", "at": later })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = session_mongo::mongodb::bson::DateTime::now();
        let live = collection
            .find_one(doc! { "_id": "b", "at": { "$gt": now } })
            .await
            .unwrap();
        assert_eq!(
            live.is_none(),
            diverges,
            "{}: a date later this second",
            backend.name()
        );
    }
}
