//! `forwarder`: how many messages a second pushnote-mq moves from an app to a server, and how
//! many it loses. A PUB socket plays the app (pre-encoded broadcasts of --size bytes in
//! pushnote's `[topic, body]` format, sent as fast as ZeroMQ takes them) and a SUB socket plays
//! a server; every body starts with its sequence number, so the receiver counts each message
//! that never arrived. The forwarder's own numbers (the stamp after the topic) tell which of
//! those it numbered and then lost on the way to the receiver, as a server would count them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushnote::wire;

use crate::rss_kib;

#[derive(clap::Args)]
pub struct ForwarderBench {
    /// The forwarder's app side (its --sub).
    #[arg(long, default_value = pushnote::DEFAULT_PUBLISH_ENDPOINT)]
    app: String,
    /// The forwarder's server side (its --pub).
    #[arg(long, default_value = pushnote::DEFAULT_SUBSCRIBE_ENDPOINT)]
    server: String,
    /// Messages to send.
    #[arg(long, default_value_t = 5_000_000)]
    messages: u64,
    /// Bytes of each message body.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per second; without it, as fast as the app side takes them.
    #[arg(long)]
    rate: Option<f64>,
    /// The forwarder's process id, for its memory (VmRSS from /proc).
    #[arg(long)]
    pid: Option<u32>,
}

pub fn run(args: ForwarderBench) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_rcvhwm(0)?;
    sub.set_rcvtimeo(100)?;
    sub.set_subscribe(wire::BROADCAST_TOPIC)?;
    sub.connect(&args.server)?;
    let publisher = ctx.socket(zmq::PUB)?;
    publisher.set_sndhwm(0)?;
    publisher.connect(&args.app)?;
    // PUB and SUB drop what is sent before their connections are up.
    std::thread::sleep(Duration::from_secs(1));

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (received2, done2) = (received.clone(), done.clone());
    let total = args.messages;
    let receiver = std::thread::spawn(move || -> anyhow::Result<Tally> {
        let (mut next, mut lost, mut reordered) = (0u64, 0u64, 0u64);
        let (mut numbered, mut numbered_lost) = (None::<wire::Position>, 0u64);
        let mut last = Instant::now();
        let mut frame = zmq::Message::new();
        loop {
            match sub.recv(&mut frame, 0) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) if done2.load(Ordering::Relaxed) => break,
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            }
            if frame.get_more() {
                // The topic; the body follows.
                if let Ok((_, Some(stamp))) = wire::split_stamp(&frame) {
                    if let Some(last) = numbered.filter(|l| l.epoch == stamp.epoch) {
                        numbered_lost += u64::from(stamp.skipped_after(last.offset).unwrap_or(0));
                    }
                    numbered = Some(stamp);
                }
                continue;
            }
            let seq = frame
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if seq >= next {
                lost += seq - next;
                next = seq + 1;
            } else {
                reordered += 1;
            }
            received2.fetch_add(1, Ordering::Relaxed);
            last = Instant::now();
            if next >= total {
                break;
            }
        }
        lost += total.saturating_sub(next);
        Ok(Tally {
            lost,
            numbered_lost,
            reordered,
            last,
        })
    });

    let rss_before = rss_kib(args.pid);
    // The topic as the client crate sends it, with room for the forwarder's stamp.
    let topic = wire::topic_with_stamp_room(wire::Target::All)?;
    let mut body = vec![b'x'; args.size.max(8)];
    let start = Instant::now();
    let mut report = Instant::now();
    for seq in 0..total {
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        body[..8].copy_from_slice(&seq.to_be_bytes());
        publisher.send(&topic[..], zmq::SNDMORE)?;
        publisher.send(&body[..], 0)?;
        if report.elapsed() >= Duration::from_secs(1) {
            eprintln!("sent {seq}, received {}", received.load(Ordering::Relaxed));
            report = Instant::now();
        }
    }
    let sent_secs = start.elapsed().as_secs_f64();
    // Wait for the tail while it keeps arriving.
    let mut seen = (received.load(Ordering::Relaxed), Instant::now());
    while seen.0 < total && seen.1.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        let now = received.load(Ordering::Relaxed);
        if now != seen.0 {
            seen = (now, Instant::now());
        }
    }
    let rss_after = rss_kib(args.pid);
    done.store(true, Ordering::Relaxed);
    let Tally {
        lost,
        numbered_lost,
        reordered,
        last,
    } = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    let got = received.load(Ordering::Relaxed);
    let secs = last.duration_since(start).as_secs_f64().max(sent_secs);
    let summary = serde_json::json!({
        "mode": "forwarder",
        "messages": total,
        "size": args.size,
        "rate": args.rate,
        "sent_per_s": total as f64 / sent_secs,
        "received": got,
        "received_per_s": got as f64 / secs,
        "lost": lost,
        "lost_after_numbering": numbered_lost,
        "reordered": reordered,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
    });
    println!("{summary}");
    eprintln!(
        "forwarder: {total} messages of {} bytes sent at {:.0}/s, {got} received at {:.0}/s; \
         lost {lost} ({numbered_lost} of them numbered by the forwarder, so counted by a \
         server), reordered {reordered}",
        args.size,
        total as f64 / sent_secs,
        got as f64 / secs
    );
    if lost + reordered > 0 {
        anyhow::bail!("not clean: {lost} lost, {reordered} reordered");
    }
    Ok(())
}

/// What the receiver saw.
struct Tally {
    /// Messages that never arrived.
    lost: u64,
    /// Of those, the ones the forwarder had numbered: lost past it.
    numbered_lost: u64,
    /// Messages that arrived after a later one.
    reordered: u64,
    /// When the last message arrived.
    last: Instant,
}
