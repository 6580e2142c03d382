//! A real Kafka-protocol broker for the tests: crabka-broker 0.3.8, built and cached by
//! `.ci/install-test-broker` (see `shared/notes/test-broker.md`). Unlike librdkafka's
//! mock cluster it keeps transactional offsets, hides aborted records from
//! read_committed consumers and fences zombie producers, so exactly-once can be shown.
//!
//! One instance per machine at a time (its controller port is fixed): a process-wide
//! lock serializes the tests of one binary, and cargo runs test binaries one by one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir::prelude::*;
use weir::runtime::internals::rdkafka;
use weir::{KafkaConfig, ProcessingGuarantee};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Where the binary is: `WEIR_TEST_BROKER_BIN`, else the install script's cache.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_TEST_BROKER_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/weir/crabka-broker-0.3.8/bin/crabka-broker");
    assert!(
        cached.exists(),
        "the real-broker tests need crabka-broker: run `bash .ci/install-test-broker` once (~20 min) or set WEIR_TEST_BROKER_BIN (looked for {})",
        cached.display()
    );
    cached
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running broker on a fresh data directory; stopped (SIGTERM, then SIGKILL) when
/// dropped.
pub struct RealBroker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    _lock: MutexGuard<'static, ()>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A random UUID (version 4), hyphenated.
fn uuid() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl RealBroker {
    /// Starts a broker on a fresh data directory and a free port, and waits until it
    /// has taken `transaction.version` = 1 (which is also the readiness check).
    pub fn start() -> RealBroker {
        let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meta.properties.json"),
            format!(
                r#"{{"cluster_id": "{}", "directory_id": "{}", "version": 1}}"#,
                uuid(),
                uuid()
            ),
        )
        .unwrap();
        let mut broker = RealBroker {
            child: None,
            dir,
            port: free_port(),
            _lock: lock,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let child = Command::new(binary())
            .args([
                "--listen-addr",
                &format!("127.0.0.1:{}", self.port),
                "--log-dir",
                self.dir.path().to_str().unwrap(),
                "--metrics-listen-addr",
                "none",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start crabka-broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match set_transaction_version(self.port) {
                Ok(()) => return,
                Err(e) => {
                    if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("crabka-broker exited at start ({status}): {e}");
                    }
                    assert!(
                        Instant::now() < deadline,
                        "crabka-broker not ready within 30 s: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// `bootstrap.servers` for it.
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM, a controlled shutdown; SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills it (SIGKILL: no controlled shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RealBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn compact_string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u32 + 1);
    out.extend_from_slice(s.as_bytes());
}

/// One UpdateFeatures request (API key 57, version 1) setting `transaction.version` to
/// 1: at the broker's default level 2 it bumps the producer epoch on every EndTxn and
/// librdkafka's producer is fenced at its second transaction. librdkafka has no call
/// for it, so the request is written here.
fn set_transaction_version(port: u16) -> Result<(), String> {
    let mut body = Vec::new();
    // Request header v2: api key, version, correlation id, client id (nullable
    // string), tagged fields.
    body.extend_from_slice(&57i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    let client = b"weir-tests";
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    varint(&mut body, 0);
    // UpdateFeaturesRequest v1: timeout_ms, [feature, max_version_level, upgrade_type
    // (2 = safe downgrade), tagged fields], validate_only, tagged fields.
    body.extend_from_slice(&30_000i32.to_be_bytes());
    varint(&mut body, 2); // one update
    compact_string(&mut body, "transaction.version");
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(2);
    varint(&mut body, 0);
    body.push(0);
    varint(&mut body, 0);

    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    conn.write_all(&framed).map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    conn.read_exact(&mut size).map_err(|e| e.to_string())?;
    let mut resp = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    conn.read_exact(&mut resp).map_err(|e| e.to_string())?;
    // Response header v1: correlation id, tagged fields (none); then throttle_time_ms
    // and the top-level error code.
    let error = resp
        .get(9..11)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("a short UpdateFeatures response ({} bytes)", resp.len()))?;
    if error != 0 {
        return Err(format!("UpdateFeatures answered error code {error}"));
    }
    // Each result's error code too: the first result follows the error message
    // (compact nullable string) and the results array's length.
    let mut at = 11;
    let msg_len = resp.get(at).copied().unwrap_or(0) as usize;
    at += 1 + msg_len.saturating_sub(1);
    let results = resp.get(at).copied().unwrap_or(1).saturating_sub(1);
    at += 1;
    if results > 0 {
        let name_len = resp.get(at).copied().unwrap_or(1) as usize - 1;
        at += 1 + name_len;
        let code = resp
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(-1);
        if code != 0 {
            return Err(format!(
                "UpdateFeatures refused transaction.version: error code {code}"
            ));
        }
    }
    Ok(())
}

/// An exactly-once runtime on the broker. crabka-broker does not take replication
/// factor -1 (the broker's default, weir's default as Kafka Streams'): its internal
/// topics get 1.
pub fn runtime(servers: &str, dir: &std::path::Path) -> Runtime {
    runtime_with(servers, dir, ProcessingGuarantee::ExactlyOnce)
}

pub fn runtime_with(
    servers: &str,
    dir: &std::path::Path,
    guarantee: ProcessingGuarantee,
) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .application_id("kafka-test")
            .commit_interval(Duration::from_millis(100))
            .state_dir(dir)
            .processing_guarantee(guarantee)
            .kafka(
                KafkaConfig::new(servers)
                    .property("session.timeout.ms", "6000")
                    .property("heartbeat.interval.ms", "500")
                    .replication_factor(1),
            )
            .build()
            .unwrap(),
    )
    .unwrap()
}

pub fn create_topics(servers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = block_on(admin.create_topics(&new, &AdminOptions::new()));
    for r in results.unwrap() {
        r.unwrap();
    }
}

/// Runs a future to completion on this thread (the admin client's calls are futures).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn raw() -> RawWaker {
        fn clone(_: *const ()) -> RawWaker {
            raw()
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    // SAFETY: the waker's functions ignore their (null) data pointer.
    let waker = unsafe { Waker::from_raw(raw()) };
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every committed record of `topic` (read_committed, an rdkafka consumer, not weir's
/// reader), in each partition's order, read until nothing new came for `quiet`: its
/// key and value bytes (`None`: a tombstone).
pub fn committed_records(
    servers: &str,
    topic: &str,
    partitions: i32,
    quiet: Duration,
) -> Vec<(String, Option<Vec<u8>>)> {
    let consumer = super::kafka::reader_of(servers, topic, Some(partitions), true);
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while last_new.elapsed() < quiet {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push((
                String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                m.payload().map(<[u8]>::to_vec),
            ));
            last_new = Instant::now();
        }
    }
    out
}

/// The committed records of `topic` as strings.
pub fn committed_strings(
    servers: &str,
    topic: &str,
    partitions: i32,
    quiet: Duration,
) -> Vec<(String, Option<String>)> {
    committed_records(servers, topic, partitions, quiet)
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| String::from_utf8(v).unwrap())))
        .collect()
}
