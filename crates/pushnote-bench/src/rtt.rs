//! `echo` and `rtt`: the machine's own round trip over loopback TCP, with nothing in between
//! but an echo. A targeted message in `fanout --targeted` crosses the same two hops (from the
//! load's core to the server's and back) and wakes the same idle cores at the same rate, so
//! the round trip measured here, pinned like the server and the load, is the floor under the
//! targeted latency of any server on this machine at that moment.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::track::Histogram;

#[derive(clap::Args)]
pub struct Echo {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:18700")]
    listen: String,
}

#[derive(clap::Args)]
pub struct Rtt {
    /// The `echo` to measure against.
    #[arg(long, default_value = "127.0.0.1:18700")]
    addr: String,
    /// Round trips per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// A name for the result line.
    #[arg(long, default_value = "")]
    label: String,
}

/// Echoes every connection's bytes back, one thread per connection, until killed.
pub fn echo(args: Echo) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)?;
    eprintln!("echo: listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = echo_one(stream) {
                eprintln!("echo: connection ended: {e}");
            }
        });
    }
    Ok(())
}

fn echo_one(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf)? {
            0 => return Ok(()),
            n => stream.write_all(&buf[..n])?,
        }
    }
}

/// Sends 8 bytes at `rate` per second and times each until its echo is back.
pub fn rtt(args: Rtt) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be above 0"
    );
    let mut stream = TcpStream::connect(&args.addr)
        .map_err(|e| anyhow::anyhow!("cannot connect to the echo at {}: {e}", args.addr))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let latency = Histogram::default();
    let (duration, gap) = (
        Duration::from_secs(args.duration),
        Duration::from_secs_f64(1.0 / args.rate),
    );
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    let mut back = [0u8; 8];
    while start.elapsed() < duration {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += gap;
        let t = Instant::now();
        stream
            .write_all(&sent.to_be_bytes())
            .and_then(|()| stream.read_exact(&mut back))
            .map_err(|e| anyhow::anyhow!("round trip {sent} through the echo failed: {e}"))?;
        latency.record(t.elapsed().as_micros() as u64);
        anyhow::ensure!(
            u64::from_be_bytes(back) == sent,
            "the echo sent back something else"
        );
        sent += 1;
    }
    let q = |p| latency.quantile(p);
    let summary = serde_json::json!({
        "mode": "rtt",
        "label": args.label,
        "rate": args.rate,
        "messages": sent,
        "latency_p50_us": q(0.5),
        "latency_p90_us": q(0.9),
        "latency_p99_us": q(0.99),
        "latency_p999_us": q(0.999),
        "latency_max_us": latency.max(),
    });
    println!("{summary}");
    let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.3}", v as f64 / 1000.0));
    eprintln!(
        "rtt: {sent} round trips at {}/s; p50 {} / p90 {} / p99 {} / p99.9 {} / max {} ms",
        args.rate,
        ms(q(0.5)),
        ms(q(0.9)),
        ms(q(0.99)),
        ms(q(0.999)),
        ms(Some(latency.max()))
    );
    Ok(())
}
