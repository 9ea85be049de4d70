//! A flood of garbage bearer tokens against Data Storage in TokenReview mode, on a real
//! kube-apiserver with the shipped RBAC: the controller's writer (a valid token, already
//! known) keeps writing, every garbage token is answered 401 or 429 (never 503), and the API
//! server sees a bounded number of TokenReviews — the bucket's burst plus its rate over the
//! flood's duration, not one per garbage token.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use audit_guard::datastorage::authz::DEFAULT_TOKEN_AUDIENCE;
use futures::StreamExt;
use serde_json::json;
use support::datastorage::*;
use support::faults::metric;
use support::{install_shipped_rbac, sa_token, token_kubeconfig};

const GARBAGE: usize = 2000;
const FLOODERS: usize = 16;
const WRITES: usize = 40;
const RATE: f64 = 5.0;
const BURST: usize = 10;

/// TokenReviews the API server has answered so far (its own request counter).
async fn token_reviews(client: &kube::Client) -> f64 {
    let req = http::Request::get("/metrics").body(vec![]).unwrap();
    let page = client.request_text(req).await.unwrap();
    page.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("resource=\"tokenreviews\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test]
async fn a_flood_of_garbage_tokens_neither_stops_the_writer_nor_reaches_the_api_server() {
    let _cluster = support::cluster_exclusive().await;
    let cp = support::control_plane();
    let client = support::admin_client().await;
    install_shipped_rbac(cp);
    let ds_token = sa_token(cp, "audit-guard-datastorage", None);
    let kubeconfig = token_kubeconfig(cp, "token-flood-datastorage", &ds_token);
    let rate = RATE.to_string();
    let burst = BURST.to_string();
    let svc = Arc::new(
        DataStorage::launch(
            Options::sqlite()
                .auth(Auth::TokenReview)
                .env("KUBECONFIG", &kubeconfig.to_string_lossy())
                .args(&["--token-review-rate", &rate, "--token-review-burst", &burst]),
        )
        .await,
    );
    let writer = sa_token(cp, "audit-guard", Some(DEFAULT_TOKEN_AUDIENCE));
    let write = |i: usize| {
        let (svc, writer) = (svc.clone(), writer.clone());
        async move {
            let rec = record(&format!("flood-{i}"), "fp", "production", "P1", &ago(5), json!(1_000_000));
            svc.post_as(&writer, BASE, &rec).await.0
        }
    };
    assert_eq!(write(0).await, 201, "the writer's token is accepted (and so known)");

    let before = token_reviews(&client).await;
    let started = std::time::Instant::now();
    let (unknown, throttled, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let flood = {
        let (svc, unknown, throttled, other) = (svc.clone(), unknown.clone(), throttled.clone(), other.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..GARBAGE)
                .for_each_concurrent(FLOODERS, |i| {
                    let (svc, unknown, throttled, other) = (svc.clone(), unknown.clone(), throttled.clone(), other.clone());
                    async move {
                        let garbage = format!("garbage-{i}-{}", uuid::Uuid::new_v4().simple());
                        let slot = match svc.get_as(&garbage, BASE).await.0 {
                            401 => &unknown,
                            429 => &throttled,
                            _ => &other,
                        };
                        slot.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await
        })
    };
    let mut refused = vec![];
    for i in 1..=WRITES {
        let s = write(i).await;
        if s != 201 {
            refused.push((i, s));
        }
    }
    flood.await.unwrap();
    let took = started.elapsed();
    let reviews = token_reviews(&client).await - before;
    let (unknown, throttled, other) = (
        unknown.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    eprintln!(
        "{GARBAGE} garbage tokens in {took:?}: 401 {unknown}, 429 {throttled}, other {other}; {WRITES} writes, refused {refused:?}; \
         the API server answered {reviews} TokenReviews"
    );
    assert!(refused.is_empty(), "the writer was refused during the flood: {refused:?}");
    assert_eq!(other, 0, "every garbage token is answered 401 or 429");
    assert!(throttled > 0, "the flood was rate limited");
    // The bucket's burst, its rate over the flood, and the writer's re-reviews (its cached
    // answer lasts 10 s): a bound that grows with time, not with the garbage.
    let bound = BURST as f64 + RATE * took.as_secs_f64().ceil() + took.as_secs_f64() / 10.0 + 2.0;
    assert!(
        reviews <= bound,
        "{reviews} TokenReviews for {GARBAGE} garbage tokens (bound {bound})"
    );
    let page = reqwest::get(svc.endpoint("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(
        metric(&page, "datastorage_token_reviews_total{outcome=\"rate_limited\"}"),
        throttled as f64
    );
}
