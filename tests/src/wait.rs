//! Waiting on conditions with a deadline (never sleep-and-hope).

use std::time::{Duration, Instant};

use anyhow::bail;

/// Polls `cond` (an async check, typically itself a blocking query) until it returns `Ok(true)` or
/// `timeout` passes.
///
/// Errors: the timeout, naming `what`; or the first error `cond` returns.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Waits until `GET url` answers 2xx (connection errors count as "not yet"), up to `timeout`.
/// The readiness check of every server a test or the bench starts (`/healthz`, `/v2/`).
///
/// Errors: the timeout, naming `what`.
pub async fn wait_http_ok(url: &str, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    wait_until(timeout, what, || {
        let (client, url) = (client.clone(), url.to_string());
        async move {
            Ok(client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()))
        }
    })
    .await
}

/// One figure of an emulator's telemetry (`GET <url>`: Consul `/v1/agent/metrics`, Nomad
/// `/v1/metrics`, go-metrics' JSON sink): `field` (`Count`, `Sum`, ...) of the entry named `name`
/// in `section` (`Counters`, `Samples`, `Gauges`); 0 when the entry is absent (nothing counted yet).
///
/// Errors: the request fails or the body is not that JSON.
pub async fn telemetry(url: &str, section: &str, name: &str, field: &str) -> anyhow::Result<f64> {
    let doc: serde_json::Value = reqwest::get(url).await?.error_for_status()?.json().await?;
    let entries = doc[section]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{url}: no {section} array"))?;
    Ok(entries
        .iter()
        .find(|e| e["Name"] == name)
        .and_then(|e| e[field].as_f64())
        .unwrap_or(0.0))
}
