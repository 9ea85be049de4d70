//! Small helpers shared by the examples (`mod common;`; not an example itself). Each example
//! uses some of them.
#![allow(dead_code)]

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Waits until `url` answers 2xx (curl, so that blocking callers need no runtime).
pub fn wait_http(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let ok = std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("{url} did not answer within {timeout:?}")
}

/// The body of a GET of `url` (curl, so that blocking callers need no runtime).
pub fn curl_get(url: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("curl").args(["-sf", "--max-time", "5", url]).output()?;
    if !out.status.success() {
        anyhow::bail!("GET {url} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until `{base}/readyz` answers 2xx; gives up early once `gone()` says the server
/// stopped.
pub async fn wait_ready(http: &reqwest::Client, base: &str, timeout: std::time::Duration, gone: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let url = format!("{base}/readyz");
    while !http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
        if std::time::Instant::now() > deadline || gone() {
            anyhow::bail!("{base} did not become ready within {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}
