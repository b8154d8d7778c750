//! What the wrapper traces, checked with a capturing `tracing` subscriber on two stores: one
//! span per call, and no session token in any field at any level. (Its own test binary: the
//! interest `tracing` caches per call site is process-wide.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::sync::{Arc, Mutex};

use common::{known_sequence, runtime, stores};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

#[test]
fn one_span_per_call_and_no_token_anywhere() {
    let captured = Arc::new(Mutex::new(Capture::default()));
    let subscriber = tracing_subscriber::registry().with(CaptureLayer(Arc::clone(&captured)));
    let ids = tracing::subscriber::with_default(subscriber, || {
        runtime().block_on(async {
            let mut ids = Vec::new();
            for store in stores().await {
                ids.extend(known_sequence(&*store).await);
            }
            ids
        })
    });
    let captured = captured.lock().unwrap();
    // 7 calls per store, three stores (the third one without metrics).
    assert_eq!(captured.spans, 21, "{:#?}", captured.text);
    let outcomes: Vec<&String> = captured
        .text
        .iter()
        .filter(|line| line.starts_with("outcome="))
        .collect();
    assert_eq!(outcomes.len(), 21, "each span records its outcome");
    for id in ids {
        let token = id.expose_secret();
        for line in &captured.text {
            assert!(!line.contains(token), "a token in a span or event: {line}");
        }
    }
    assert!(captured
        .text
        .iter()
        .any(|line| line.starts_with("session=") && line.len() == "session=".len() + 8));
}

#[derive(Default)]
struct Capture {
    spans: usize,
    text: Vec<String>,
}

struct CaptureLayer(Arc<Mutex<Capture>>);

struct Fields<'a>(&'a mut Vec<String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_new_span(&self, attributes: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut capture = self.0.lock().unwrap();
        if attributes.metadata().name() == "session_store" {
            capture.spans += 1;
        }
        attributes.record(&mut Fields(&mut capture.text));
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap().text));
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        event.record(&mut Fields(&mut self.0.lock().unwrap().text));
    }
}
