//! The `Publisher` class: one connection to the bus, shared by every thread of a process.
//!
//! Sends run without the GIL (the first may wait up to the ready timeout for the forwarder's
//! subscription), so other Python threads go on meanwhile. A publisher belongs to the process
//! that made it: its ZeroMQ context's I/O thread does not survive `fork`, so in a forked child
//! an inherited publisher refuses to send, and is never torn down there (tearing down a context
//! whose threads are gone could block the child for ever). The Python side makes a new one
//! in the child.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use serde_json::value::RawValue;

use crate::errors::{publish_error, raise};

/// Publishes onto the pushnote bus (the forwarder's app side, or a `--single` server), or
/// into the Redis of servers started with `--broker`.
#[pyclass(module = "pushnote._native", frozen)]
pub struct Publisher {
    endpoint: String,
    /// Where confirmed publishes go, if anywhere.
    confirm: Option<String>,
    /// The prefix of pushnote's keys in Redis, if one was given.
    broker_prefix: Option<String>,
    /// Redis' replicas that must hold a publish before it returns.
    broker_replicas: u32,
    /// The process that connected; only it may use or drop the connection.
    pid: u32,
    /// `None` once closed.
    inner: Mutex<Option<Arc<pushnote::Publisher>>>,
}

#[pymethods]
impl Publisher {
    /// Connects to `endpoint` (for example "tcp://127.0.0.1:8002"). The connection is made in
    /// the background: this fails only for a malformed endpoint. `ready_timeout` is how long
    /// the first send waits for the forwarder, `linger` how long closing waits for unsent
    /// messages, both in seconds. `confirm` is the forwarder's `--confirm` endpoint, for the
    /// `*_confirmed` methods, which wait up to `confirm_timeout` seconds for their positions.
    ///
    /// With a Redis `endpoint` ("redis://host:port"), publishes into Redis under
    /// `broker_prefix` (default "pushnote:"): every publish waits for Redis' answer (up to
    /// `confirm_timeout`, 5 s by default), and the `*_confirmed` methods need no `confirm`;
    /// with `broker_replicas` above 0, a publish returns only once that many of Redis'
    /// replicas hold it too (Redis' WAIT), and is unconfirmed otherwise.
    #[new]
    #[pyo3(signature = (endpoint, ready_timeout = 2.0, linger = 2.0, confirm = None, confirm_timeout = None, broker_prefix = None, broker_replicas = 0))]
    // The keyword arguments of the Python constructor, one each.
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        endpoint: String,
        ready_timeout: f64,
        linger: f64,
        confirm: Option<String>,
        confirm_timeout: Option<f64>,
        broker_prefix: Option<String>,
        broker_replicas: u32,
    ) -> PyResult<Self> {
        let ready_timeout = seconds(py, "ready_timeout", ready_timeout)?;
        let linger = seconds(py, "linger", linger)?;
        let mut builder = pushnote::Publisher::builder(&endpoint)
            .ready_timeout(ready_timeout)
            .linger(linger);
        if let Some(prefix) = &broker_prefix {
            builder = builder.broker_prefix(prefix);
        }
        builder = builder.replicas(broker_replicas);
        if let Some(confirm) = &confirm {
            builder = builder.confirm(confirm);
        }
        if let Some(t) = confirm_timeout {
            builder = builder.confirm_timeout(seconds(py, "confirm_timeout", t)?);
        }
        // Connecting to Redis may wait (up to `ready_timeout`): without the GIL.
        let publisher = py.allow_threads(|| builder.connect()).map_err(|e| {
            raise(
                py,
                "ConfigurationError",
                format!("cannot connect to {}: {e}", redacted(&endpoint)),
            )
        })?;
        Ok(Publisher {
            endpoint,
            confirm,
            broker_prefix,
            broker_replicas,
            pid: std::process::id(),
            inner: Mutex::new(Some(Arc::new(publisher))),
        })
    }

    /// Where this publisher publishes.
    #[getter]
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where confirmed publishes go, or None.
    #[getter]
    fn confirm(&self) -> Option<&str> {
        self.confirm.as_deref()
    }

    /// The prefix of pushnote's keys in Redis given, or None.
    #[getter]
    fn broker_prefix(&self) -> Option<&str> {
        self.broker_prefix.as_deref()
    }

    /// Redis' replicas that must hold a publish before it returns (0: none).
    #[getter]
    fn broker_replicas(&self) -> u32 {
        self.broker_replicas
    }

    /// Sends the JSON text `data` to every connected page once the forwarder has it; its
    /// position, (epoch, offset).
    fn notify_all_confirmed(&self, py: Python<'_>, data: &str) -> PyResult<(u32, u32)> {
        let publisher = self.live(py)?;
        let data = json(py, data)?;
        py.allow_threads(|| publisher.notify_all_confirmed(&*data))
            .map(|p| (p.epoch, p.offset))
            .map_err(|e| publish_error(py, e, "everyone"))
    }

    /// Sends the JSON text `data` to every page of each user id in `users` once the forwarder
    /// has it; each user's position, (epoch, offset), in order.
    fn notify_confirmed(
        &self,
        py: Python<'_>,
        data: &str,
        users: Vec<String>,
    ) -> PyResult<Vec<(u32, u32)>> {
        let publisher = self.live(py)?;
        let data = json(py, data)?;
        py.allow_threads(|| publisher.notify_confirmed(&*data, &users))
            .map(|ps| ps.iter().map(|p| (p.epoch, p.offset)).collect())
            .map_err(|e| publish_error(py, e, &format!("users {users:?}")))
    }

    /// Sends the JSON text `data` as `event` to every page in `channel` once the forwarder has
    /// it; its position, (epoch, offset).
    fn publish_confirmed(
        &self,
        py: Python<'_>,
        channel: &str,
        event: &str,
        data: &str,
    ) -> PyResult<(u32, u32)> {
        let publisher = self.live(py)?;
        let data = json(py, data)?;
        py.allow_threads(|| publisher.publish_confirmed(channel, event, &*data))
            .map(|p| (p.epoch, p.offset))
            .map_err(|e| publish_error(py, e, &format!("channel {channel:?}, event {event:?}")))
    }

    /// Whether a forwarder (or `--single` server) is subscribed now, as far as the socket has
    /// seen.
    fn is_connected(&self, py: Python<'_>) -> PyResult<bool> {
        let publisher = self.live(py)?;
        Ok(py.allow_threads(|| publisher.is_connected()))
    }

    /// Sends the JSON text `data` to every connected page.
    fn notify_all(&self, py: Python<'_>, data: &str) -> PyResult<()> {
        let publisher = self.live(py)?;
        let data = json(py, data)?;
        py.allow_threads(|| publisher.notify_all(&*data))
            .map_err(|e| publish_error(py, e, "everyone"))
    }

    /// Sends the JSON text `data` to every page of each user id in `users`.
    fn notify(&self, py: Python<'_>, data: &str, users: Vec<String>) -> PyResult<()> {
        let publisher = self.live(py)?;
        let data = json(py, data)?;
        py.allow_threads(|| publisher.notify(&*data, &users))
            .map_err(|e| publish_error(py, e, &format!("users {users:?}")))
    }

    /// Sends the JSON text `data` as `event` to every page in `channel`.
    fn publish(&self, py: Python<'_>, channel: &str, event: &str, data: &str) -> PyResult<()> {
        let publisher = self.live(py)?;
        let data = json(py, data)?;
        py.allow_threads(|| publisher.publish(channel, event, &*data))
            .map_err(|e| publish_error(py, e, &format!("channel {channel:?}, event {event:?}")))
    }

    /// Closes the connection, waiting up to `linger` for unsent messages to go out. Later
    /// sends fail; closing again does nothing.
    fn close(&self, py: Python<'_>) {
        let publisher = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(publisher) = publisher {
            if self.pid == std::process::id() {
                // The linger happens here (or in the last send still running), without the GIL.
                py.allow_threads(|| drop(publisher));
            } else {
                std::mem::forget(publisher);
            }
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<pushnote._native.Publisher {:?}>",
            redacted(&self.endpoint)
        )
    }
}

impl Publisher {
    /// The open connection, if this process made it.
    fn live(&self, py: Python<'_>) -> PyResult<Arc<pushnote::Publisher>> {
        if self.pid != std::process::id() {
            return Err(raise(
                py,
                "PushnoteError",
                format!(
                    "this publisher was connected by process {} and cannot be used in process \
                     {} (after fork): connect a new one in this process",
                    self.pid,
                    std::process::id()
                ),
            ));
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clone().ok_or_else(|| {
            raise(
                py,
                "PushnoteError",
                format!("the publisher of {} is closed", redacted(&self.endpoint)),
            )
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // An inherited connection: its context's threads stayed in the parent.
            let publisher = self
                .inner
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            std::mem::forget(publisher);
        }
    }
}

/// `endpoint` without a password (a Redis endpoint may hold one), for messages.
fn redacted(endpoint: &str) -> String {
    match pushnote::redis_endpoint::RedisEndpoint::parse(endpoint) {
        Ok(redis) => redis.to_string(),
        Err(_) if pushnote::redis_endpoint::is_redis(endpoint) => "a Redis endpoint".to_owned(),
        Err(_) => endpoint.to_owned(),
    }
}

/// `text` checked to be one JSON value, kept as it is (no re-encoding).
fn json(py: Python<'_>, text: &str) -> PyResult<Box<RawValue>> {
    RawValue::from_string(text.to_owned()).map_err(|e| {
        raise(
            py,
            "SerializationError",
            format!("data is not valid JSON text: {e}"),
        )
    })
}

/// A duration in seconds, checked.
fn seconds(py: Python<'_>, name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        raise(
            py,
            "ConfigurationError",
            format!("{name} must be a number of seconds, 0 or more (got {value})"),
        )
    })
}
