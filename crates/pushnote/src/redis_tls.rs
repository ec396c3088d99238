//! The byte stream to Redis: plain TCP, or TLS for `rediss://` (rustls, checking Redis'
//! certificate against the system's roots, or the CA file the endpoint names with `?ca=`).
//!
//! Blocking use (the publisher, the server's first commands) reads and writes through
//! [`std::io::Read`] and [`std::io::Write`]. The server's engine reads and writes without
//! blocking ([`Transport::read_ready`], [`Transport::write_ready`]): with TLS, a write is taken
//! into rustls whole or not at all, and what rustls still holds for the socket is written
//! when the socket takes it ([`Transport::wants_write`]), so no byte is written twice.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A connection's bytes.
pub enum Transport {
    /// Plain TCP (`redis://`).
    Plain(TcpStream),
    /// TLS over TCP (`rediss://`).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// The TLS settings of a `rediss://` endpoint: Redis' certificate is checked against the CA
/// certificates in `ca` (a PEM file), or the system's roots without one.
pub fn config(ca: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("the CA file {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("the CA file {path} holds no certificate"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA file {path}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot read is one fewer to trust, not a failure.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "the system has no CA certificates to check Redis' against; name \
                            one with ?ca=PATH"
                        .into(),
                );
            }
        }
    }
    // The crypto of the crate's one provider feature (ring).
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Transport {
    /// TLS over `tcp` to `host` (its name or address, as the certificate must name it).
    pub fn tls(tcp: TcpStream, host: &str, config: Arc<ClientConfig>) -> Result<Transport, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host} cannot be checked against a certificate: {e}"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(Transport::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }

    /// Whether TLS holds bytes for the socket that it has not taken yet.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.conn.wants_write(),
        }
    }

    /// Writes what TLS holds for the socket, as far as a non-blocking socket takes it.
    pub fn flush_ready(&mut self) -> io::Result<()> {
        let Transport::Tls(s) = self else {
            return Ok(());
        };
        while s.conn.wants_write() {
            match s.conn.write_tls(&mut s.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there on a non-blocking socket: `WouldBlock` when nothing is, `Ok(0)`
    /// when Redis closed the connection.
    pub fn read_ready(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = match self {
            Transport::Plain(s) => return s.read(buf),
            Transport::Tls(s) => s,
        };
        loop {
            match s.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing decrypted waits: take in what the socket has.
            match s.conn.read_tls(&mut s.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    s.conn.process_new_packets().map_err(io::Error::other)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes as much of `data` as a non-blocking socket takes; `WouldBlock` when it takes
    /// none. With TLS, `data` is taken whole once what TLS held before is out.
    pub fn write_ready(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Transport::Plain(s) = self {
            return s.write(data);
        }
        self.flush_ready()?;
        let Transport::Tls(s) = self else {
            unreachable!("plain returned above")
        };
        if s.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = s.conn.writer().write(data)?;
        self.flush_ready()?;
        Ok(taken)
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}
