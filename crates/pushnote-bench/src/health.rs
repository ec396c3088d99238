//! Watching a server's `/health` during a run: how far behind the bus it was (`"lag"`), and
//! when it said it was overloaded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// One answer of `/health`.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the watch began.
    pub at: f64,
    pub status: String,
    pub lag: f64,
}

/// Asks `server`'s `/health` every `every` until `stop`, and returns every answer (a failed
/// request is a sample with status `"no answer"`).
pub async fn watch(
    server: SocketAddr,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut last_status = String::new();
    loop {
        let (status, lag) = match tokio::time::timeout(every * 5, ask(server)).await {
            Ok(Ok(answer)) => answer,
            _ => ("no answer".to_owned(), 0.0),
        };
        let at = began.elapsed().as_secs_f64();
        if status != last_status {
            eprintln!("health at {at:.1} s: {status} (lag {lag:.3} s)");
            last_status.clone_from(&status);
        }
        samples.push(Sample { at, status, lag });
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return samples,
        }
    }
}

/// The body of `GET path` (HTTP/1.1, one request on its own connection).
async fn get(server: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(server).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// The sum of the values of metric `name` (over its labels) at `server`'s `/metrics`;
/// `None` if the server serves no metrics.
pub async fn metric(server: SocketAddr, name: &str) -> Option<u64> {
    let body = get(server, "/metrics").await.ok()?;
    let values: Vec<u64> = body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// One `GET /health`: the status and the lag it reports.
async fn ask(server: SocketAddr) -> anyhow::Result<(String, f64)> {
    let body = get(server, "/health").await?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok((
        v["status"].as_str().unwrap_or("?").to_owned(),
        v["lag"].as_f64().unwrap_or(0.0),
    ))
}

/// The largest lag reported, the seconds reported overloaded (counting each sample for the
/// interval after it), and when the last overloaded answer came.
pub fn summary(samples: &[Sample]) -> (f64, f64, Option<f64>) {
    let max_lag = samples.iter().map(|s| s.lag).fold(0.0, f64::max);
    let overloaded: f64 = samples
        .windows(2)
        .filter(|w| w[0].status == "overloaded")
        .map(|w| w[1].at - w[0].at)
        .fold(0.0, |a, b| a + b);
    let last = samples
        .iter()
        .rev()
        .find(|s| s.status == "overloaded")
        .map(|s| s.at);
    (max_lag, overloaded, last)
}
