//! The HTTP listener behind `--listen-address`: four GET endpoints
//! (`/metrics`, `/healthz`, `/readyz`, `/status`), one request per
//! connection, requests parsed by `httparse`.
//!
//! It is written for a sidecar's threat model rather than for throughput:
//! connections are bounded, each has a short deadline to send its request
//! head (a slow client is answered 408 and dropped), and nothing it does
//! can block the watch loop, which only ever touches atomics.
//!
//! Idle clients never starve the probes. When every slot is taken, a new
//! connection takes the slot of the oldest client that has not sent its
//! request yet (that one is answered 408 and closed): a kubelet probe sends
//! its request as soon as it connects, so however many connections anyone
//! holds open, it is answered. Only when every slot is busy answering is a
//! new connection refused with 503.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
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
    /// Connections held at once. Past it, a new connection takes the slot
    /// of the oldest one still waiting for its request; if none is, it is
    /// answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send its request head, and to read the answer.
    pub request_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 16,
            // A probe sends its request at once; a scraper within
            // milliseconds. Two seconds is generous to both.
            request_timeout: Duration::from_secs(2),
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

/// The connections being served, for eviction: each with a handle on its
/// socket and whether it is still waiting for its request head.
#[derive(Default)]
struct Slots {
    next_id: u64,
    held: Vec<Slot>,
}

struct Slot {
    id: u64,
    /// A clone of the connection's socket: shutting its read side down
    /// wakes the connection's thread from its read at once.
    socket: TcpStream,
    /// Still reading the request head: evictable.
    waiting: bool,
    /// Set when evicted, so that the thread answers 408 rather than
    /// taking the shutdown for the client's end.
    evicted: Arc<AtomicBool>,
}

/// A connection's claim on its slot: marks the head received, and frees
/// the slot when dropped.
struct Claim {
    id: u64,
    slots: Arc<Mutex<Slots>>,
    evicted: Arc<AtomicBool>,
}

impl Claim {
    fn head_received(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.held.iter_mut().find(|s| s.id == self.id) {
            slot.waiting = false;
        }
    }

    fn evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.held.retain(|s| s.id != self.id);
    }
}

/// A slot for `stream`: a free one, or the oldest waiting client's (which
/// is woken to answer 408). `None` when every slot is busy answering.
fn claim(slots: &Arc<Mutex<Slots>>, stream: &TcpStream, max: usize) -> Option<Claim> {
    let socket = stream.try_clone().ok()?;
    let mut held = slots.lock().unwrap_or_else(|e| e.into_inner());
    if held.held.len() >= max {
        // Oldest first: slots are pushed in order of arrival.
        let at = held.held.iter().position(|s| s.waiting)?;
        let old = held.held.remove(at);
        old.evicted.store(true, Ordering::SeqCst);
        let _ = old.socket.shutdown(Shutdown::Read);
    }
    held.next_id += 1;
    let id = held.next_id;
    let evicted = Arc::new(AtomicBool::new(false));
    held.held.push(Slot {
        id,
        socket,
        waiting: true,
        evicted: evicted.clone(),
    });
    Some(Claim {
        id,
        slots: slots.clone(),
        evicted,
    })
}

fn accept(
    listener: &TcpListener,
    status: &Arc<Status>,
    options: &ServerOptions,
    stop: &AtomicBool,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
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
        let Some(claim) = claim(&slots, &stream, options.max_connections) else {
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
        };
        let (status, timeout) = (status.clone(), options.request_timeout);
        // A thread that cannot start drops its claim with the closure.
        let _ = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || serve(stream, &status, timeout, &claim));
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(mut stream: TcpStream, status: &Status, timeout: Duration, claim: &Claim) {
    let deadline = Instant::now() + timeout;
    let _ = stream.set_write_timeout(Some(timeout));
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let timed_out = || (408, false, "text/plain", "request timeout\n".to_owned());
    let (code, head_only, kind, body) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break timed_out();
        }
        match stream.read(&mut buf[len..]) {
            // Our own shutdown of the read side: a newer connection took
            // this slot.
            Ok(0) | Err(_) if claim.evicted() => break timed_out(),
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break timed_out();
            }
            Err(_) => return,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                claim.head_received();
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
    let known = matches!(path, "/" | "/metrics" | "/healthz" | "/readyz" | "/status");
    let head = method == "HEAD";
    if !known {
        return (
            404,
            head,
            TEXT,
            format!("not found: {path} (try /metrics, /healthz, /readyz, /status)\n"),
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
        "/readyz" => {
            let readiness = status.readiness();
            let code = if readiness.ready { 200 } else { 503 };
            (code, head, TEXT, format!("{}\n", readiness.reason))
        }
        // Always 200: the page describes the state, /readyz judges it.
        "/status" => (
            200,
            head,
            "application/json",
            format!("{:#}\n", status.status()),
        ),
        _ => (
            200,
            head,
            TEXT,
            "configmapwatch: /metrics /healthz /readyz /status\n".to_owned(),
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
        let slots = Arc::new(Mutex::new(Slots::default()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let claim = claim(&slots, &stream, 1).unwrap();
        assert_eq!(slots.lock().unwrap().held.len(), 1);
        let ended = thread::spawn(move || {
            let _claim = claim;
            panic!("a bug while serving");
        })
        .join();
        assert!(ended.is_err());
        assert!(slots.lock().unwrap().held.is_empty());
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
