//! TokenReview authentication against a real kube-apiserver.

mod datastorage_common;
mod support;

use datastorage_common::*;
use serde_json::json;

#[tokio::test]
async fn service_account_tokens_accepted_garbage_refused() {
    let cp = support::control_plane();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "ds-tr").await.unwrap();
    cp.kubectl(&["create", "serviceaccount", "ds-writer", "-n", &ns]).unwrap();
    let token = cp.kubectl(&["create", "token", "ds-writer", "-n", &ns]).unwrap().trim().to_string();
    assert!(!token.is_empty());

    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    let svc = Service::start_with(None, &["--token-review"], &[("KUBECONFIG", kubeconfig.as_str())]).await;

    // A ServiceAccount token from the TokenRequest API writes and reads.
    let rec = record("tr-1", "fp", "production", "P0", &ago(5), json!(1_000_000_000i64));
    let r = svc
        .http
        .post(svc.url(BASE))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(rec.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = svc
        .http
        .get(svc.url(&format!("{BASE}/tr-1")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), rec);

    // Garbage, a tampered token and no token are refused, reads included.
    // Change the signature's first character: its last one carries padding bits too, so
    // replacing that can leave the decoded signature (and so the token) as it was.
    let sig = token.rfind('.').unwrap() + 1;
    let other = if token[sig..].starts_with('A') { "B" } else { "A" };
    let tampered = format!("{}{other}{}", &token[..sig], &token[sig + 1..]);
    for bad in ["garbage", tampered.as_str()] {
        for req in [
            svc.http.get(svc.url(BASE)).bearer_auth(bad),
            svc.http
                .post(svc.url(BASE))
                .bearer_auth(bad)
                .header("content-type", "application/json")
                .body(record("tr-2", "fp", "production", "P0", &ago(5), json!(1)).to_string()),
        ] {
            let (s, h, body) = split(req.send().await.unwrap()).await;
            assert_eq!(s, 401, "{body}");
            assert_eq!(h["content-type"], "application/problem+json");
        }
    }
    assert_eq!(svc.http.get(svc.url(BASE)).send().await.unwrap().status(), 401);

    // Only the one record went in.
    let r = svc.http.get(svc.url(BASE)).bearer_auth(&token).send().await.unwrap();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    support::delete_namespace(&client, &ns).await;

    // With the API server gone, an unreviewed token cannot be judged: 503 (retry), never a pass.
    cp.kill("kube-apiserver").unwrap();
    let (s, h, body) = split(svc.http.get(svc.url(BASE)).bearer_auth("never-seen-token").send().await.unwrap()).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(h["content-type"], "application/problem+json");
}
