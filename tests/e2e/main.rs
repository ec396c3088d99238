//! End-to-end tests: the real binaries on ephemeral loopback ports, real ZeroMQ, real SockJS
//! over WebSocket, publishing through the real client crate (and through Python with pyzmq and
//! Django where interoperability is the point).

mod redis_proc;
mod redis_sentinel_proc;
mod support;

mod browser;
mod channels;
mod client_protocol;
mod confirm_bounds;
mod confirmed;
mod confirmed_single;
mod delivery;
mod deploy;
mod deploy_docs;
mod deploy_redis;
mod faults;
mod flags;
mod haproxy;
mod hardening;
mod histograms;
mod http_bounds;
mod http_publish;
mod interop;
mod lifecycle;
mod limits;
mod nginx;
mod nginx_capacity;
mod nginx_restart;
mod opaque_tokens;
mod overload;
mod presence;
mod presence_cli;
mod presence_js;
mod proxied;
mod proxy;
mod pushnote_js;
mod recovery;
mod recovery_bounds;
mod redis_bridge;
mod redis_engine;
mod redis_publish;
mod redis_script;
mod redis_sentinel;
mod redis_tls;
mod replies;
mod routing;
mod session_bounds;
mod tokens;
mod transports;
mod wire_checks;
