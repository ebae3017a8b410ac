//! The schedule holds its rate, and the corrected latency shows what the send-time latency hides.
//! The two tests run one at a time: both measure time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fwb_loadtest::pacing::{self, Clock, Performed, Planned, Recorder, Shape, UserCtx, Workload};
use fwb_reports::Class;
use goose::prelude::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the test server does besides answering `ok` at once.
#[derive(Clone, Copy)]
enum Trouble {
    None,
    /// Holds one request after three seconds for a second.
    OneStall,
    /// Answers nothing after this long (each request waits a minute).
    FreezeAfter(Duration),
}

async fn server(trouble: Trouble) -> String {
    let started = Instant::now();
    let stalled = Arc::new(AtomicBool::new(false));
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let stalled = stalled.clone();
            async move {
                match trouble {
                    Trouble::None => {}
                    Trouble::OneStall => {
                        if started.elapsed() > Duration::from_secs(3) && !stalled.swap(true, Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    Trouble::FreezeAfter(after) => {
                        if started.elapsed() > after {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

struct GetRoot;

#[async_trait]
impl Workload for GetRoot {
    fn plan(&self, _ctx: &mut UserCtx) -> Planned {
        Planned { name: "root", class: Class::Api, kind: 0 }
    }

    async fn perform(&self, _planned: Planned, user: &mut GooseUser, _ctx: &mut UserCtx) -> Performed {
        let sent = Instant::now();
        let (status, error) = match user.get("/").await {
            Ok(g) => match g.response {
                Ok(r) if r.status() == 200 => (Some(200), r.bytes().await.err().map(|e| e.to_string())),
                Ok(r) => (Some(r.status().as_u16()), Some(format!("status {}", r.status()))),
                Err(e) => (None, Some(e.to_string())),
            },
            Err(e) => (None, Some(e.to_string())),
        };
        Performed { name: "root", class: Class::Api, sent, status, error }
    }
}

async fn drive(base: &str, shape: Shape) -> Arc<Recorder> {
    let clock = Clock::new(&shape);
    let recorder = Arc::new(Recorder::new(clock));
    pacing::drive(base, &shape, clock, Arc::new(GetRoot), recorder.clone(), &[]).await.unwrap();
    recorder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_holds_200_requests_a_second() {
    let _one = ONE_AT_A_TIME.lock().await;
    let base = server(Trouble::None).await;
    let shape = Shape {
        users: 20,
        rate: 200.0,
        spike: None,
        ramp_up: Duration::from_secs(1),
        warm_up: Duration::from_secs(1),
        steady: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
    };
    let recorder = drive(&base, shape).await;
    let stats = &recorder.by_class()[&Class::Api];
    assert_eq!(stats.errors, 0);
    let rate = stats.count as f64 / 10.0;
    assert!((190.0..=210.0).contains(&rate), "achieved {rate} req/s of 200");
    // Evenly over the window, not in bursts: no second is far off.
    for point in recorder.timeline() {
        assert!((150..=250).contains(&point.requests), "second {}: {} requests", point.t_s, point.requests);
    }
    // Users wake at their due time to a fraction of a millisecond: a timer on whole milliseconds (tokio's) makes
    // the median lateness half a millisecond or more, which every due-time latency would carry.
    let lateness = recorder.lateness().expect("users waited for their due times");
    assert!(lateness.p50_ms < 0.3, "median wake-up lateness {:.3} ms", lateness.p50_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_corrected_latency_only() {
    let _one = ONE_AT_A_TIME.lock().await;
    let base = server(Trouble::OneStall).await;
    // Two users at 50 req/s each: the stalled user owes 50 requests when its answer comes.
    let shape = Shape {
        users: 2,
        rate: 100.0,
        spike: None,
        ramp_up: Duration::from_secs(1),
        warm_up: Duration::ZERO,
        steady: Duration::from_secs(6),
        timeout: Duration::from_secs(5),
    };
    let recorder = drive(&base, shape).await;
    let stats = &recorder.by_class()[&Class::Api];
    assert_eq!(stats.errors, 0);
    assert!(stats.count > 500, "{} requests", stats.count);
    assert!(stats.sent.max_ms >= 1000.0, "the stall itself: {} ms", stats.sent.max_ms);
    assert!(stats.sent.p99_ms < 100.0, "send-time p99 {} ms", stats.sent.p99_ms);
    assert!(stats.corrected.p99_ms > 500.0, "corrected p99 {} ms", stats.corrected.p99_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_owed_when_the_run_ends_are_counted_as_missed() {
    let _one = ONE_AT_A_TIME.lock().await;
    // 100 req/s over 6 s of steady state; the service stops answering 3 s into it.
    let base = server(Trouble::FreezeAfter(Duration::from_secs(4))).await;
    let shape = Shape {
        users: 10,
        rate: 100.0,
        spike: None,
        ramp_up: Duration::from_secs(1),
        warm_up: Duration::ZERO,
        steady: Duration::from_secs(6),
        timeout: Duration::from_secs(2),
    };
    let recorder = drive(&base, shape).await;
    let stats = &recorder.by_class()[&Class::Api];
    // Every request due is counted, answered or not: about 600.
    assert!((560..=640).contains(&stats.count), "{} requests counted of ~600 due", stats.count);
    assert!(stats.missed + stats.errors >= 250, "{} missed, {} failed", stats.missed, stats.errors);
    assert!(stats.missed > 0, "requests never sent are misses");
    assert!(stats.error_rate > 0.4, "error rate {}", stats.error_rate);
    // A miss waited from its due time to the end of the run.
    assert!(stats.corrected.max_ms > 2000.0, "corrected max {} ms", stats.corrected.max_ms);
    let timeline = recorder.timeline();
    assert!(timeline.iter().rev().take(2).all(|p| p.requests >= 80), "the frozen seconds count too: {timeline:?}");
}

#[test]
fn windows_hold_at_least_twenty_requests_and_take_the_p95() {
    // 10 requests a second for 6 s: windows of two seconds, 20 requests each, the last second joining the one before.
    let seconds: Vec<Vec<u32>> = (0..7).map(|s| (1..=10).map(|i| (s * 100 + i) * 1000).collect()).collect();
    let windows = pacing::window_p95s(&seconds);
    assert_eq!(windows.len(), 3, "{windows:?}");
    // The first window holds 1..10 ms and 101..110 ms: its 19th of 20 is 109 ms.
    assert_eq!(windows[0], 109.0);
    assert_eq!(pacing::window_p95s(&[vec![5000]]), vec![5.0]);
    assert!(pacing::window_p95s(&[vec![], vec![]]).is_empty());
}
