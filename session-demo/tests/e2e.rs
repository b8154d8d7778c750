//! Both demo instances over real HTTP, sharing one SQLite file, with the id in a cookie, a
//! header and a bearer token.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{json, Value};
use session_conformance::namespace;
use session_demo::{instance, serve, Transport};

struct Demo {
    a: String,
    b: String,
    files: Vec<std::path::PathBuf>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn start(transport: Transport) -> Demo {
    let path = std::env::temp_dir().join(format!("{}.db", namespace("demo")));
    let url = format!("sqlite://{}", path.display());
    let mut bases = Vec::new();
    for _ in 0..2 {
        let (listener, router) = instance(SocketAddr::from(([127, 0, 0, 1], 0)), &url, transport)
            .await
            .unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(serve(listener, router));
    }
    let files = ["", "-wal", "-shm"]
        .iter()
        .map(|s| format!("{}{s}", path.display()).into())
        .collect();
    Demo {
        b: bases.pop().unwrap(),
        a: bases.pop().unwrap(),
        files,
    }
}

/// Status of a GET with this client (and its cookies).
async fn status_of(client: &reqwest::Client, url: String) -> StatusCode {
    client.get(url).send().await.unwrap().status()
}

/// The JSON body of a GET.
async fn json_of(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// A client that keeps cookies, as a browser does.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

fn morris() -> Value {
    json!({"username": "morris", "password": "morris"})
}

/// Cookie mode, as a browser would: log in on A, the profile is on B, logout on A ends it on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_on_one_instance_is_seen_on_the_other() {
    let demo = start(Transport::Cookie).await;
    let browser = browser();

    assert_eq!(
        status_of(&browser, format!("{}/profile", demo.b)).await,
        StatusCode::UNAUTHORIZED
    );
    let wrong = browser
        .post(format!("{}/login", demo.a))
        .json(&json!({"username": "morris", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let login = browser
        .post(format!("{}/login", demo.a))
        .json(&morris())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let set_cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains("Secure"),
        "the plain-HTTP demo turns Secure off: {set_cookie}"
    );

    let profile = json_of(&browser, format!("{}/profile", demo.b)).await;
    assert_eq!(profile["username"], "morris");
    assert!(profile["served_by"]
        .as_str()
        .unwrap()
        .contains(&demo.b.rsplit(':').next().unwrap().to_string()));
    let sessions = json_of(&browser, format!("{}/sessions", demo.b)).await;
    assert_eq!(sessions.as_array().unwrap().len(), 1);

    assert_eq!(
        browser
            .post(format!("{}/logout", demo.a))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_of(&browser, format!("{}/profile", demo.b)).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Two devices, then "log out everywhere" from one of them ends both, on both instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_ends_every_device() {
    let demo = start(Transport::Cookie).await;
    let (laptop, phone) = (browser(), browser());
    for (device, base) in [(&laptop, &demo.a), (&phone, &demo.b)] {
        assert!(device
            .post(format!("{base}/login"))
            .json(&morris())
            .send()
            .await
            .unwrap()
            .status()
            .is_success());
    }
    let sessions = json_of(&phone, format!("{}/sessions", demo.a)).await;
    assert_eq!(sessions.as_array().unwrap().len(), 2);
    let ended: Value = laptop
        .post(format!("{}/logout-everywhere", demo.b))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ended["ended_sessions"], 2);
    for device in [&laptop, &phone] {
        for base in [&demo.a, &demo.b] {
            assert_eq!(
                status_of(device, format!("{base}/profile")).await,
                StatusCode::UNAUTHORIZED
            );
        }
    }
}

/// Header and bearer modes: the id comes back in X-Auth-Token and is sent by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_bearer_modes() {
    for transport in [Transport::Header, Transport::Bearer] {
        let demo = start(transport).await;
        let client = reqwest::Client::new();
        let login = client
            .post(format!("{}/login", demo.a))
            .json(&morris())
            .send()
            .await
            .unwrap();
        let token = login
            .headers()
            .get("x-auth-token")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(token.len(), 43);
        let request = client.get(format!("{}/profile", demo.b));
        let request = match transport {
            Transport::Header => request.header("x-auth-token", &token),
            _ => request.bearer_auth(&token),
        };
        let profile: Value = request.send().await.unwrap().json().await.unwrap();
        assert_eq!(profile["username"], "morris", "{transport:?}");
        let forged = client
            .get(format!("{}/profile", demo.b))
            .bearer_auth("A".repeat(43))
            .header("x-auth-token", "A".repeat(43));
        assert_eq!(
            forged.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
