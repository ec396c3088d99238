//! nginx (Debian's package) with the repository's configuration, deploy/nginx/nginx.conf and
//! deploy/nginx/pushnote.conf, changed only where a test must: its own port instead of 443,
//! its own certificate, its own upstreams, and the paths of a temporary directory instead of
//! the system's. Run in the foreground, never as a service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A self-signed certificate for 127.0.0.1, made with openssl.
pub(crate) fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A temporary directory of its own.
pub(crate) fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), rand_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How a test runs the shipped configuration.
pub(crate) struct Site<'a> {
    pub port: u16,
    pub servers: &'a [u16],
    /// TLS on the port, with a certificate of the test's (else plain HTTP).
    pub tls: bool,
    /// The configuration's stickiness, its cookie and its hash; else a balancer that splits
    /// every HTTP-transport session: its sends (`…_send`) to the second server, every other
    /// request to the first (round robin would split most sessions, but not every one).
    pub sticky: bool,
    /// Locations added to the server block (where "The rest of your site" is).
    pub locations: String,
    /// The workers' descriptor limit instead of nginx.conf's, where this machine allows less.
    pub rlimit_nofile: Option<u64>,
    /// This many workers instead of one a core, each with a listening socket of its own
    /// (`reuseport`): the kernel then spreads connections evenly among them, where one busy
    /// worker could otherwise take more than its descriptors allow.
    pub workers: Option<usize>,
}

impl Site<'_> {
    pub(crate) fn new(port: u16, servers: &[u16]) -> Site<'_> {
        Site {
            port,
            servers,
            tls: true,
            sticky: true,
            locations: String::new(),
            rlimit_nofile: None,
            workers: None,
        }
    }
}

/// `text` with `from` replaced by `to`, which must be there.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the configuration has {from:?}");
    text.replace(from, to)
}

/// deploy/nginx/pushnote.conf as `site` runs it.
fn site_conf(dir: &Path, site: &Site) -> String {
    let text = std::fs::read_to_string(repo_path("deploy/nginx/pushnote.conf")).unwrap();
    // The configuration's two servers, 8081 and 8082, wherever it names them (the upstreams
    // and the cookie's map).
    assert_eq!(site.servers.len(), 2, "the configuration lists two servers");
    let mut text = replace(&text, "8081", "\u{0}a");
    text = replace(&text, "8082", "\u{0}b");
    text = text.replace("\u{0}a", &site.servers[0].to_string());
    text = text.replace("\u{0}b", &site.servers[1].to_string());
    let listen = format!(
        "    listen 127.0.0.1:{}{}{};\n",
        site.port,
        if site.tls { " ssl" } else { "" },
        if site.workers.is_some() {
            " reuseport"
        } else {
            ""
        }
    );
    text = replace(
        &text,
        "    listen 443 ssl;\n    listen [::]:443 ssl;\n",
        &listen,
    );
    let (cert, key) = certificate(dir);
    text = replace(
        &text,
        "/etc/ssl/certs/push.example.com.pem",
        cert.to_str().unwrap(),
    );
    text = replace(
        &text,
        "/etc/ssl/private/push.example.com.key",
        key.to_str().unwrap(),
    );
    if !site.sticky {
        text = replace(&text, "    hash $pushnote_session consistent;\n", "");
        text = replace(
            &text,
            "proxy_pass http://$pushnote_upstream;",
            "proxy_pass http://$pushnote_split;",
        );
        text = format!(
            "map $uri $pushnote_split {{\n    ~_send$ pushnote_{};\n    default pushnote_{};\n}}\n{text}",
            site.servers[1], site.servers[0]
        );
    }
    replace(
        &text,
        "    # The rest of your site.\n",
        &format!("    # The rest of your site.\n{}", site.locations),
    )
}

/// deploy/nginx/nginx.conf with `site` in place of Debian's included sites, and a temporary
/// directory in place of the system's paths.
fn main_conf(dir: &Path, site: &Site) -> String {
    let text = std::fs::read_to_string(repo_path("deploy/nginx/nginx.conf")).unwrap();
    let d = dir.display();
    // Started by whoever runs the tests: no user to switch to when that is root (nginx then
    // takes nobody), none possible otherwise.
    let mut text = replace(&text, "user www-data;\n", "");
    if let Some(n) = site.workers {
        text = replace(
            &text,
            "worker_processes auto;\n",
            &format!("worker_processes {n};\n"),
        );
    }
    text = replace(
        &text,
        "pid /run/nginx.pid;\n",
        &format!("pid {d}/nginx.pid;\ndaemon off;\n"),
    );
    text = replace(
        &text,
        "error_log /var/log/nginx/error.log;\n",
        &format!("error_log {d}/error.log warn;\n"),
    );
    text = replace(&text, "include /etc/nginx/modules-enabled/*.conf;\n", "");
    if let Some(n) = site.rlimit_nofile {
        text = replace(
            &text,
            "worker_rlimit_nofile 131072;\n",
            &format!("worker_rlimit_nofile {n};\n"),
        );
    }
    text = replace(
        &text,
        "\taccess_log /var/log/nginx/access.log;\n",
        &format!(
            "\taccess_log off;\n\tclient_body_temp_path {d}/body;\n\tproxy_temp_path {d}/proxy;\n\
             \tfastcgi_temp_path {d}/fastcgi;\n\tuwsgi_temp_path {d}/uwsgi;\n\tscgi_temp_path {d}/scgi;\n"
        ),
    );
    text = replace(
        &text,
        "\tinclude /etc/nginx/conf.d/*.conf;\n\tinclude /etc/nginx/sites-enabled/*;\n",
        &site_conf(dir, site),
    );
    text
}

/// nginx in the foreground, stopped when dropped.
pub(crate) struct Nginx {
    proc: Proc,
    pub dir: PathBuf,
}

impl Nginx {
    pub(crate) fn start(dir: &Path, site: &Site) -> Nginx {
        let file = dir.join("nginx.conf");
        std::fs::write(&file, main_conf(dir, site)).unwrap();
        let test = Command::new("nginx")
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir)
            .output()
            .expect("nginx (Debian's nginx package)");
        assert!(
            test.status.success(),
            "{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let proc = Proc::spawn(
            Command::new("nginx")
                .arg("-c")
                .arg(&file)
                .arg("-p")
                .arg(dir),
        );
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", site.port)).is_err() {
            assert!(Instant::now() < deadline, "nginx listens");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            proc,
            dir: dir.to_owned(),
        }
    }

    /// What nginx logged (warnings and worse): the first 20 lines.
    pub(crate) fn error_log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A fast shutdown: the master ends its workers, then itself, freeing the port.
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(WAIT);
    }
}
