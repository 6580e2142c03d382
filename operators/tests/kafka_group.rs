//! Scale-out through the consumer group: two processes with the same application id
//! split the partitions of a query; when one is killed (SIGKILL), the other takes its
//! partitions over, restores their state from the changelog and goes on, with nothing
//! lost and nothing counted twice.
//!
//! The second member is this test binary run again as a child process (the ignored
//! test `group_member`), on the same mock cluster.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kafka::{
    COUNTS_CHANGELOG, ChildProcess, cluster, committed, counts, each, produce, records, runtime,
    spawn_child, wait_for_last,
};
use common::wait_until;

const SERVERS: &str = "WEIR_TEST_MEMBER_SERVERS";
const STATE_DIR: &str = "WEIR_TEST_MEMBER_STATE_DIR";

/// The child: a runtime running `counts` in the group until it is killed.
#[test]
#[ignore = "a child process of a_killed_member_s_partitions_are_restored_and_continued_elsewhere"]
fn group_member() {
    let (Ok(servers), Ok(dir)) = (std::env::var(SERVERS), std::env::var(STATE_DIR)) else {
        panic!("run only as the child of another test ({SERVERS}, {STATE_DIR} unset)");
    };
    let _ = env_logger::try_init();
    let rt = runtime(&servers, std::path::Path::new(&dir));
    let q = rt.start_query("counts", counts()).unwrap();
    // Tells the parent how many tasks it runs (its share of the partitions).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut told = usize::MAX;
    while Instant::now() < deadline {
        let tasks = q.stats().tasks;
        if tasks != told {
            println!("tasks {tasks}");
            told = tasks;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not killed within 120 s");
}

/// The member process, and the task count it last reported.
fn spawn_member(servers: &str, dir: &std::path::Path) -> (ChildProcess, Arc<AtomicUsize>) {
    let dir = dir.to_str().unwrap();
    let mut child = spawn_child("group_member", &[(SERVERS, servers), (STATE_DIR, dir)]);
    let tasks = Arc::new(AtomicUsize::new(0));
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let t = tasks.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(|l| l.ok()) {
            if let Some(n) = line.strip_prefix("tasks ").and_then(|n| n.parse().ok()) {
                t.store(n, Ordering::SeqCst);
            }
        }
    });
    (child, tasks)
}

#[test]
fn a_killed_member_s_partitions_are_restored_and_continued_elsewhere() {
    let mock = cluster(&[("in", 4), ("counts", 4), (COUNTS_CHANGELOG, 4)]);
    let servers = mock.bootstrap_servers();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = runtime(&servers, dir_a.path());
    let q = a.start_query("counts", counts()).unwrap();
    wait_until("all four partitions", || q.stats().tasks == 4);
    produce(&servers, "in", &records(40, 5));
    wait_until("the first 200", || q.stats().records_processed == 200);
    wait_until("their commit", || committed(&servers, "in", 4) == 200);

    // A second member joins: each gets two partitions.
    let (mut b, b_tasks) = spawn_member(&servers, dir_b.path());
    let started = Instant::now();
    while q.stats().tasks != 2 || b_tasks.load(Ordering::SeqCst) != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no rebalance: {} tasks here, {} there",
            q.stats().tasks,
            b_tasks.load(Ordering::SeqCst)
        );
        assert!(b.0.try_wait().unwrap().is_none(), "the member exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let processed_before = q.stats().records_processed;
    produce(&servers, "in", &records(40, 5));
    wait_for_last(&servers, "counts", &each(40, 10), false);
    let by_a = q.stats().records_processed - processed_before;
    assert!(
        by_a > 0 && by_a < 200,
        "the new records were not split: {by_a} of 200 here"
    );
    // Everything the member processed is committed; then it dies without a word.
    wait_until("the member's commits", || {
        committed(&servers, "in", 4) == 400
    });
    b.kill();

    // Its partitions come back here (after its session times out): their counts are
    // restored from the changelog and counting goes on.
    produce(&servers, "in", &records(40, 5));
    wait_for_last(&servers, "counts", &each(40, 15), false);
    assert_eq!(q.stats().tasks, 4);
    assert!(
        q.stats().records_restored > 0,
        "the member's state was not restored"
    );
    q.stop().unwrap();
}
