//! The HTTP listener behind `--listen-address`: three GET endpoints, one
//! request per connection, requests parsed by `httparse`.
//!
//! It is written for a sidecar's threat model rather than for throughput:
//! connections are bounded (one more is answered 503 at once and closed),
//! each has a total deadline to send its request (a slow client is answered
//! 408 and dropped), and nothing it does can block the watch loop, which
//! only ever touches atomics.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use super::{Health, Status};

/// The largest request head accepted; a scraper's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// Limits of the listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send its request, and to read the answer.
    pub request_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 16,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A running listener; dropping it stops accepting (connections already
/// being answered finish on their own, each bounded by the timeout).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `address` (`127.0.0.1:9533`, `[::1]:9533`, `:9533` for every
    /// interface, or a host name) and serves `status` on a thread of its
    /// own.
    pub fn start(address: &str, status: Arc<Status>, options: ServerOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(resolve(address)?.as_slice())?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("http".into()).spawn({
            let stop = stop.clone();
            move || accept(&listener, &status, &options, &stop)
        })?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (the port, when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// `:9533` means every interface, as in Go's listeners (and the Prometheus
/// reloader's `--listen-address`).
fn resolve(address: &str) -> io::Result<Vec<SocketAddr>> {
    let address = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_owned(),
    };
    let addrs: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{address}: no address"),
        ));
    }
    Ok(addrs)
}

fn accept(
    listener: &TcpListener,
    status: &Arc<Status>,
    options: &ServerOptions,
    stop: &AtomicBool,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else {
            // EMFILE and the like: passing, and not the loop's problem.
            // A short pause keeps a persistent error from spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= options.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            // Briefly, on the accepting thread: a flood costs it at most
            // this much per connection and spawns nothing.
            let brief = Some(Duration::from_millis(10));
            let _ = stream.set_write_timeout(brief);
            let _ = respond(
                &mut stream,
                false,
                503,
                "text/plain",
                "too many connections\n",
            );
            close(stream, brief);
            continue;
        }
        let (status, done, timeout) = (status.clone(), active.clone(), options.request_timeout);
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                // Released on unwinding too: a panic while serving (a bug)
                // ends this connection only, and must not hold one of the
                // max_connections slots for good.
                let _slot = Slot(done);
                serve(stream, &status, timeout);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A connection's place in the active count, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(mut stream: TcpStream, status: &Status, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let _ = stream.set_write_timeout(Some(timeout));
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let (code, head_only, kind, body) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break (408, false, "text/plain", "request timeout\n".to_owned());
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break (408, false, "text/plain", "request timeout\n".to_owned());
            }
            Err(_) => return,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default();
                let path = request.path.unwrap_or_default();
                break route(status, method, path);
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                break (431, false, "text/plain", "request too large\n".to_owned());
            }
            Err(e) => break (400, false, "text/plain", format!("bad request: {e}\n")),
        }
    };
    let _ = respond(&mut stream, head_only, code, kind, &body);
    close(stream, Some(Duration::from_millis(100)));
}

/// Closes after the answer without losing it: closing a socket with
/// unread request bytes makes the kernel send a reset, which can destroy
/// the answer before the client reads it. So: end our side, then read
/// what the client sent (for at most `linger`) until it closes.
fn close(mut stream: TcpStream, linger: Option<Duration>) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(linger);
    let mut sink = [0u8; 1024];
    let deadline = Instant::now() + linger.unwrap_or_default();
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// The answer to `method path`: status, whether to leave the body out
/// (HEAD), content type and body.
fn route(status: &Status, method: &str, path: &str) -> (u16, bool, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    // A query string does not change what is asked.
    let path = path.split('?').next().unwrap_or(path);
    let known = matches!(path, "/" | "/metrics" | "/healthz" | "/readyz");
    let head = method == "HEAD";
    if !known {
        return (
            404,
            head,
            TEXT,
            format!("not found: {path} (try /metrics, /healthz, /readyz)\n"),
        );
    }
    if method != "GET" && !head {
        return (
            405,
            false,
            TEXT,
            format!("method {method} not allowed: use GET\n"),
        );
    }
    match path {
        "/metrics" => (
            200,
            head,
            "text/plain; version=0.0.4; charset=utf-8",
            status.metrics(),
        ),
        "/healthz" => match status.health() {
            Health::Alive { since } => (
                200,
                head,
                TEXT,
                format!("ok: last check {:.1}s ago\n", since.as_secs_f64()),
            ),
            Health::Stuck { since, limit } => (
                503,
                head,
                TEXT,
                format!(
                    "stuck: no check for {:.1}s (a check is due at least every {:.1}s)\n",
                    since.as_secs_f64(),
                    limit.as_secs_f64()
                ),
            ),
        },
        "/readyz" => match (
            status.not_ready().as_slice(),
            status.unconfirmed().as_slice(),
        ) {
            ([], []) => (
                200,
                head,
                TEXT,
                "ready: every directory has a valid config\n".to_owned(),
            ),
            ([], failing) => (
                503,
                head,
                TEXT,
                format!("reload not confirmed (retrying): {}\n", failing.join("; ")),
            ),
            (missing, _) => (
                503,
                head,
                TEXT,
                format!("no valid config yet: {}\n", missing.join(", ")),
            ),
        },
        _ => (
            200,
            head,
            TEXT,
            "configmapwatch: /metrics /healthz /readyz\n".to_owned(),
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    head_only: bool,
    code: u16,
    kind: &str,
    body: &str,
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_slot_is_given_back_when_its_thread_panics() {
        let active = Arc::new(AtomicUsize::new(1));
        let slot = Slot(active.clone());
        let ended = thread::spawn(move || {
            let _slot = slot;
            panic!("a bug while serving");
        })
        .join();
        assert!(ended.is_err());
        assert_eq!(active.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_bare_port_means_every_interface() {
        assert_eq!(resolve(":9533").unwrap(), ["0.0.0.0:9533".parse().unwrap()]);
        assert_eq!(
            resolve("127.0.0.1:0").unwrap(),
            ["127.0.0.1:0".parse().unwrap()]
        );
        assert!(resolve("nonsense").is_err());
    }
}
