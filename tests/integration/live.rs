//! `Live<T>` against real volumes written the kubelet's way: typed configs
//! in each format, refusals that keep the last good config, the torture of
//! readers against a swapping writer, the idle tick's allocations, the
//! thread ending with the last handle, and the tokio stream. Also the
//! binary's YAML/TOML/`--all-keys` handling.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{Error, Event, EventKind, Format, Live, Payload};
use serde::Deserialize;

use crate::helper::{self, DEADLINE, allocations, watch_json};

const FAST: Duration = Duration::from_millis(5);

#[derive(Debug, Deserialize, PartialEq)]
struct Server {
    port: u16,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Config {
    server: Server,
    name: String,
}

/// Errors seen by `on_error`, in order.
fn error_log() -> (Arc<Mutex<Vec<Event>>>, impl FnMut(&Event) + Send + 'static) {
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = log.clone();
    (log, move |e: &Event| sink.lock().unwrap().push(e.clone()))
}

/// For each format: valid, a type mismatch naming the field path and line,
/// a syntax error with line and column, a validator refusal, then recovery;
/// the last good config stays current throughout.
#[test]
fn each_format_typed_refusals_keep_the_last_good_and_recover() {
    let cases: [(&str, [&str; 5]); 3] = [
        (
            "config.yaml",
            [
                "server:\n  port: 8080\nname: a\n",
                "server:\n  port: \"x\"\nname: b\n",
                "server:\n  port: [8080\nname: c\n",
                "server:\n  port: 1\nname: d\n",
                "server:\n  port: 9090\nname: e\n",
            ],
        ),
        (
            "config.toml",
            [
                "name = \"a\"\n[server]\nport = 8080\n",
                "name = \"b\"\n[server]\nport = \"x\"\n",
                "name = \"c\"\n[server]\nport = = 1\n",
                "name = \"d\"\n[server]\nport = 1\n",
                "name = \"e\"\n[server]\nport = 9090\n",
            ],
        ),
        (
            "config.json",
            [
                "{\"name\": \"a\",\n \"server\": {\"port\": 8080}}",
                "{\"name\": \"b\",\n \"server\": {\"port\": \"x\"}}",
                "{\"name\": \"c\",\n \"server\":\n {\"port\": }}",
                "{\"name\": \"d\",\n \"server\": {\"port\": 1}}",
                "{\"name\": \"e\",\n \"server\": {\"port\": 9090}}",
            ],
        ),
    ];
    for (key, [good, mismatch, syntax, refused, fixed]) in cases {
        let vol = vol!();
        vol.publish(&[(key, good)]);
        let (errors, on_error) = error_log();
        let live = Live::<Config>::watch(vol.path())
            .key(key)
            .interval(FAST)
            .validate(|c: &Config| {
                if c.server.port < 1024 {
                    Err(format!("port {} is privileged", c.server.port))
                } else {
                    Ok(())
                }
            })
            .on_error(on_error)
            .start(DEADLINE)
            .unwrap();
        let first = live.get();
        assert_eq!(first.name, "a");
        assert_eq!(live.version(), vol.target());

        for (content, expect) in [
            (
                mismatch,
                "server.port: invalid type: string \"x\", expected u16",
            ),
            (syntax, "at line 3"),
            (refused, "refused by the validator: port 1 is privileged"),
        ] {
            let n = errors.lock().unwrap().len();
            let version = vol.publish(&[(key, content)]);
            helper::wait_until("the error event", || errors.lock().unwrap().len() > n);
            let e = errors.lock().unwrap()[n].clone();
            let message = e.error.unwrap();
            assert_eq!(
                (e.kind, e.version.as_str()),
                (EventKind::Error, version.as_str())
            );
            assert!(
                message.contains(expect),
                "{key}: {message:?} lacks {expect:?}"
            );
            // One error shape (issue 21): every event names the key at
            // fault, the validator's refusal included, and starts with it.
            assert_eq!(e.key.as_deref(), Some(key), "{message}");
            assert!(message.starts_with(&format!("key {key}: ")), "{message}");
            if expect.starts_with("server.port") {
                assert_eq!(e.key.as_deref(), Some(key));
                assert!(
                    message.contains("at line "),
                    "{key}: no position in {message}"
                );
            }
            assert!(
                Arc::ptr_eq(&live.get(), &first),
                "{key}: the last good config stays"
            );
        }

        vol.publish(&[(key, fixed)]);
        let now = live.wait_for_change(&first, DEADLINE).expect("recovery");
        assert_eq!((now.name.as_str(), now.server.port), ("e", 9090));
        assert_eq!(live.version(), vol.target());
    }
}

#[test]
fn start_times_out_naming_the_last_error() {
    let vol = vol!();
    vol.publish(&[("config.yaml", "server: {port: x}\nname: a\n")]);
    let err = Live::<Config>::watch(vol.path())
        .key("config.yaml")
        .interval(FAST)
        .start(Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, Error::NoConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("server.port"), "{err}");
}

#[test]
fn format_override_and_several_keys() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // Never built: its keys cannot be parsed.
    struct Both {
        #[serde(rename = "a.conf")]
        a: Server,
        #[serde(rename = "b.toml")]
        b: Server,
    }
    let vol = vol!();
    vol.publish(&[("app.conf", "port: 7\n")]);
    let live = Live::<Server>::watch(vol.path())
        .key("app.conf")
        .format(Format::Yaml)
        .start(DEADLINE)
        .unwrap();
    assert_eq!(live.get().port, 7);

    let vol = vol!();
    vol.publish(&[("a.conf", "{\"port\": 1}"), ("b.toml", "port = 2")]);
    let err = Live::<Both>::watch(vol.path())
        .keys(["a.conf", "b.toml"])
        .interval(FAST)
        .start(Duration::from_millis(50))
        .unwrap_err();
    assert!(err.to_string().contains("--format"), "{err}");
    vol.publish(&[("a.json", "{\"port\": 1}"), ("b.toml", "port = 2")]);
    #[derive(Debug, Deserialize)]
    struct Both2 {
        #[serde(rename = "a.json")]
        a: Server,
        #[serde(rename = "b.toml")]
        b: Server,
    }
    let live = Live::<Both2>::watch(vol.path())
        .keys(["a.json", "b.toml"])
        .start(DEADLINE)
        .unwrap();
    assert_eq!((live.get().a.port, live.get().b.port), (1, 2));
}

/// Readers calling `get()` in a tight loop while a writer swaps versions:
/// never a mixed config (every field carries the version), never
/// backwards, and every reader sees the last version.
#[test]
fn torture_readers_never_see_a_mixed_or_older_config() {
    #[derive(Debug, Deserialize)]
    struct Versioned {
        a: u64,
        b: u64,
        c: Vec<u64>,
        d: String,
    }
    fn doc(n: u64) -> String {
        format!("a: {n}\nb: {n}\nc: [{n}, {n}, {n}]\nd: \"{n}\"\n")
    }
    const LAST: u64 = 150;
    let vol = vol!();
    vol.publish(&[("config.yaml", &doc(0))]);
    let live = Live::<Versioned>::watch(vol.path())
        .key("config.yaml")
        .interval(Duration::from_millis(1))
        .start(DEADLINE)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let live = live.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut last, mut reads) = (0, 0u64);
                let deadline = Instant::now() + DEADLINE * 3;
                loop {
                    let c = live.get();
                    let n = c.a;
                    assert!(
                        c.b == n && c.c == [n, n, n] && c.d == n.to_string(),
                        "mixed config {c:?}"
                    );
                    assert!(n >= last, "went backwards from {last} to {n}");
                    last = n;
                    reads += 1;
                    if n == LAST && stop.load(Ordering::Relaxed) {
                        return reads;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "never saw version {LAST}, last {last}"
                    );
                }
            })
        })
        .collect();
    for n in 1..=LAST {
        vol.publish(&[("config.yaml", &doc(n))]);
        if n % 10 == 0 {
            // Let the watcher see some of the versions, not only the last.
            let seen = live.get();
            if seen.a < n {
                live.wait_for_change(&seen, DEADLINE);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(live.get().a, LAST);
}

/// An idle tick with `Live<T>` (driven on this thread so the counting
/// allocator sees it) is the watcher's: no allocation.
#[test]
fn an_idle_live_tick_allocates_nothing() {
    let vol = vol!();
    vol.publish(&[("config.toml", "name = \"a\"\n[server]\nport = 8080\n")]);
    let (live, mut driver) = Live::<Config>::watch(vol.path())
        .key("config.toml")
        .start_driven(DEADLINE)
        .unwrap();
    // arc-swap registers a thread on its first read (one allocation, once
    // per thread): done before counting.
    assert_eq!(live.get().server.port, 8080);
    let before = allocations();
    for _ in 0..1000 {
        assert!(driver.tick().is_none());
        assert_eq!(live.get().server.port, 8080);
    }
    assert_eq!(allocations() - before, 0, "allocations in 1000 idle ticks");
    vol.publish(&[("config.toml", "name = \"b\"\n[server]\nport = 8081\n")]);
    assert_eq!(driver.tick().map(|e| e.kind), Some(EventKind::Change));
    assert_eq!(live.get().server.port, 8081);
}

/// The watching thread owns the callbacks: they are dropped when it ends,
/// which must happen once the last handle is gone.
#[test]
fn the_thread_stops_when_the_last_handle_drops() {
    struct Dropped(mpsc::Sender<()>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let vol = vol!();
    vol.publish(&[("config.json", "{\"port\": 1}")]);
    let (tx, rx) = mpsc::channel();
    let guard = Dropped(tx);
    let (changes_tx, changes) = mpsc::channel();
    let live = Live::<Server>::watch(vol.path())
        .interval(Duration::from_secs(3600))
        .on_change(move |c: &Arc<Server>, _: &Event| {
            let _ = &guard;
            let _ = changes_tx.send(c.port);
        })
        .start(DEADLINE)
        .unwrap();
    assert_eq!(
        changes.recv_timeout(DEADLINE),
        Ok(1),
        "on_change saw the first"
    );
    let other = live.clone();
    drop(live);
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a handle is still alive"
    );
    assert_eq!(other.get().port, 1);
    drop(other);
    assert!(
        rx.recv_timeout(DEADLINE).is_ok(),
        "the thread did not end (even with a one-hour interval)"
    );
}

#[test]
fn tokio_stream_follows_changes_on_a_real_runtime() {
    let vol = vol!();
    vol.publish(&[("config.json", "{\"port\": 1}")]);
    let live = Live::<Server>::watch(vol.path())
        .interval(FAST)
        .start(DEADLINE)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rx = live.subscribe();
        assert_eq!(rx.borrow_and_update().port, 1);
        vol.publish(&[("config.json", "{\"port\": 2}")]);
        tokio::time::timeout(DEADLINE, rx.changed())
            .await
            .expect("a change within the deadline")
            .unwrap();
        assert_eq!(rx.borrow_and_update().port, 2);
        let seen = live.get();
        vol.publish(&[("config.json", "{\"port\": 3}")]);
        let now = tokio::time::timeout(DEADLINE, live.changed(&seen))
            .await
            .expect("a change within the deadline")
            .unwrap();
        assert_eq!(now.port, 3);
    });
}

/// The binary: a binary key beside a good YAML config under --all-keys is
/// left out with a warning naming it, and the config still fires; a broken
/// YAML key is an error (validate before acting); events carry JSON.
#[test]
fn all_keys_parses_yaml_and_leaves_binary_keys_out() {
    let vol = vol!();
    let mut p = Payload::new();
    p.insert("app.yaml", "a: 1\n").unwrap();
    p.insert("blob", vec![0xff, 0xfe, 0x00]).unwrap();
    p.insert("motd", "hi").unwrap();
    vol.write(&p);
    let mut run = watch_json(&vol, &["--all-keys"]);
    let _ = &mut run;
    // The initial event was consumed by watch_json; check its successor.
    vol.publish(&[("app.yaml", "a: 2\n"), ("motd", "hi")]);
    let e = run.event_for("change", &vol.target());
    assert_eq!(
        e["config"],
        serde_json::json!({"app.yaml": {"a": 2}, "motd": "hi"})
    );
    let version = vol.publish(&[("app.yaml", "a: [2\n"), ("motd", "hi")]);
    let e = run.event_for("error", &version);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("key app.yaml: invalid YAML, at line 1 column"),
        "{e}"
    );
    let deadline = Instant::now() + DEADLINE;
    let mut stderr = String::new();
    while !stderr.contains("blob") {
        assert!(
            Instant::now() < deadline,
            "no warning naming blob: {stderr}"
        );
        if let Ok(line) = run.stderr.recv_timeout(Duration::from_millis(50)) {
            stderr.push_str(&line);
        }
    }
    assert!(stderr.contains("binary"), "{stderr}");
}

#[test]
fn file_repeatable_and_format_flag() {
    let vol = vol!();
    vol.publish(&[
        ("a.yaml", "x: 1\n"),
        ("b.toml", "y = 2\n"),
        ("c.conf", "z = 3\n"),
    ]);
    let run = watch_json(&vol, &["-f", "a.yaml", "-f", "b.toml"]);
    drop(run);
    let run = crate::helper::Running::spawn({
        let mut cmd = helper::bin();
        cmd.args([
            "-o", "json", "-i", "10ms", "-f", "a.yaml", "--file", "b.toml", "-d",
        ])
        .arg(vol.path());
        cmd
    });
    let e = run.event_for("initial", &vol.target());
    assert_eq!(
        e["config"],
        serde_json::json!({"a.yaml": {"x": 1}, "b.toml": {"y": 2}})
    );
    let run = crate::helper::Running::spawn({
        let mut cmd = helper::bin();
        cmd.args([
            "-o", "json", "-i", "10ms", "-f", "c.conf", "--format", "toml", "-d",
        ])
        .arg(vol.path());
        cmd
    });
    let e = run.event_for("initial", &vol.target());
    assert_eq!(e["config"], serde_json::json!({"z": 3}));
    let run = crate::helper::Running::spawn({
        let mut cmd = helper::bin();
        cmd.args(["-o", "json", "-i", "10ms", "-f", "c.conf", "-d"])
            .arg(vol.path());
        cmd
    });
    let e = run.event_for("error", &vol.target());
    assert!(e["error"].as_str().unwrap().contains("--format"), "{e}");
}

#[test]
fn builder_over_watch_options() {
    use configmapwatch::{Selector, WatchOptions};
    let vol = vol!();
    vol.publish(&[("app.conf", "[server]\nport = 4\n")]);
    let options = WatchOptions::new(vol.path())
        .with_selector(Selector::key("app.conf").with_format(Format::Toml))
        .with_interval(FAST)
        .with_max_file_size(1 << 20);
    let live = Live::<std::collections::BTreeMap<String, Server>>::builder(options)
        .start(DEADLINE)
        .unwrap();
    assert_eq!(live.get()["server"].port, 4);
}

/// `deny_unknown_fields` refuses a version with a field the type does not
/// have (a typo), naming its path, its line and column, and the key; the
/// last good config stays. Without it, unknown fields are ignored, as serde
/// does.
#[test]
fn deny_unknown_fields_refuses_a_typo_with_its_path_and_position() {
    let vol = vol!();
    vol.publish(&[("config.yaml", "name: app\nserver:\n  port: 8080\n")]);
    let errors = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
    let seen = errors.clone();
    let live = Live::<Config>::watch(vol.path())
        .key("config.yaml")
        .interval(Duration::from_millis(10))
        .deny_unknown_fields()
        .on_error(move |e| seen.lock().unwrap().push(e.clone()))
        .start(DEADLINE)
        .unwrap();
    let typo = vol.publish(&[(
        "config.yaml",
        "name: app\nserver:\n  port: 8080\n  prot: 9090\n",
    )]);
    helper::wait_until("the typo refused", || {
        errors.lock().unwrap().iter().any(|e| e.version == typo)
    });
    let e = errors.lock().unwrap().pop().unwrap();
    assert_eq!(e.key.as_deref(), Some("config.yaml"));
    let error = e.error.unwrap();
    assert!(
        error.contains("unknown field `server.prot`") && error.contains("at line 4 column 3"),
        "{error}"
    );
    assert_eq!(live.get().server.port, 8080, "the last good config stays");

    // Ignored by default.
    let lenient = Live::<Config>::watch(vol.path())
        .key("config.yaml")
        .start(DEADLINE)
        .unwrap();
    assert_eq!(lenient.version(), typo);
}
