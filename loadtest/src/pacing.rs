//! The engine: goose users that keep a schedule, and the recorder of what they measured.
//!
//! Each user has its own sequence of due times, one every `users / rate` seconds. A user waits for its next
//! due time, sends, and moves its due time on by one interval however long the answer took: a slow answer
//! does not thin out the load (as it would with a wait after each answer), the user catches up instead.
//! Latency is recorded twice: from the due time, which counts the time a request waited behind a slow one
//! (coordinated-omission corrected, what a client with its own pace sees), and from the send time.
//!
//! Every request due in the steady state is counted, sent or not: one still unanswered when the run ends, or
//! never sent because its user was waiting on an earlier one, is a miss, with its latency from its due time to
//! the end of the run. A user draws what it will send before it waits ([`Workload::plan`]), so a miss has a name
//! and a class like any other request.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use fwb_reports::{Class, ErrorCount, Percentiles, RequestStats, Shedding, TimelinePoint, WINDOW_MIN_REQUESTS};
use goose::prelude::*;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_timerfd::Delay;

use crate::scenario::Spike;

/// When a run does what.
#[derive(Debug, Clone)]
pub struct Shape {
    pub users: usize,
    pub rate: f64,
    pub spike: Option<Spike>,
    pub ramp_up: Duration,
    pub warm_up: Duration,
    pub steady: Duration,
    pub timeout: Duration,
}

impl Shape {
    /// After the steady state, users stop sending and answers still in flight arrive.
    pub fn drain(&self) -> Duration {
        self.timeout.min(Duration::from_secs(5))
    }

    /// The target rate at `since_steady` after the steady state began (before it: the base rate).
    pub fn rate_at(&self, since_steady: Option<Duration>) -> f64 {
        match (self.spike, since_steady) {
            (Some(s), Some(t)) if (s.at_s..s.at_s + s.duration_s).contains(&t.as_secs()) => self.rate * s.factor,
            _ => self.rate,
        }
    }

    fn peak_rate(&self) -> f64 {
        self.rate * self.spike.map_or(1.0, |s| s.factor.max(1.0))
    }
}

/// The run's clock: fixed when the run starts.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub started: Instant,
    pub started_at: SystemTime,
    pub steady_start: Instant,
    pub steady_end: Instant,
    /// Users stop here.
    pub end: Instant,
}

impl Clock {
    pub fn new(shape: &Shape) -> Self {
        let started = Instant::now();
        let steady_start = started + shape.ramp_up + shape.warm_up;
        let steady_end = steady_start + shape.steady;
        Clock { started, started_at: SystemTime::now(), steady_start, steady_end, end: steady_end + shape.drain() }
    }

    pub fn in_steady(&self, t: Instant) -> bool {
        t >= self.steady_start && t < self.steady_end
    }

    pub fn wall(&self, t: Instant) -> SystemTime {
        self.started_at + t.saturating_duration_since(self.started)
    }
}

/// A user's own state, kept between its requests.
#[derive(Debug, Clone)]
pub struct UserCtx {
    /// The goose user's number, from 0.
    pub index: usize,
    pub rng: SmallRng,
    next_due: Option<Instant>,
    /// The next page of the listing this user saw last.
    pub cursor: Option<String>,
}

/// One request as a workload made it.
#[derive(Debug)]
pub struct Performed {
    pub name: &'static str,
    pub class: Class,
    /// Just before the request went out.
    pub sent: Instant,
    /// The response's status, if one arrived.
    pub status: Option<u16>,
    /// Why the request counts as failed: no response, an unexpected status, or a wrong body.
    pub error: Option<String>,
}

/// What a user will send next, drawn before its due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub name: &'static str,
    pub class: Class,
    /// The workload's own index of the request kind.
    pub kind: usize,
}

/// What users do when their request is due: one HTTP request through the goose user, checked.
#[async_trait]
pub trait Workload: Send + Sync + 'static {
    /// Draws the user's next request.
    fn plan(&self, ctx: &mut UserCtx) -> Planned;

    /// Sends `planned` (or the nearest thing, when it cannot be sent yet) and checks the answer.
    async fn perform(&self, planned: Planned, user: &mut GooseUser, ctx: &mut UserCtx) -> Performed;
}

impl UserCtx {
    /// The state of user `index`, with a random generator seeded from it (runs repeat their choices).
    pub fn new(index: usize) -> Self {
        UserCtx { index, rng: SmallRng::seed_from_u64(0x5eed ^ index as u64), next_due: None, cursor: None }
    }
}

#[derive(Clone)]
struct Slot(Option<UserCtx>);

/// A goose attack of `shape.users` users running `workload` on its schedule against `host`.
/// `goose_reports` are the paths goose writes its own reports to (`.html`, `.json`, `.md`).
pub async fn drive(
    host: &str,
    shape: &Shape,
    clock: Clock,
    workload: Arc<dyn Workload>,
    recorder: Arc<Recorder>,
    goose_reports: &[&Path],
) -> anyhow::Result<GooseMetrics> {
    let engine = Arc::new(Engine {
        shape: shape.clone(),
        clock,
        workload,
        recorder,
        owed: (0..shape.users).map(|_| Mutex::new(Owed::default())).collect(),
        timers: (0..shape.users).map(|_| Mutex::new(None)).collect(),
    });
    let counting = engine.clone();
    let transaction = Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let engine = engine.clone();
        Box::pin(async move {
            engine.step(user).await;
            Ok(())
        })
    }))
    .set_name("paced");

    // Users start over the ramp, then hold until the steady state and the drain are over, then stop at once.
    let ramp = shape.ramp_up.as_secs().max(1);
    let hold = (clock.end.saturating_duration_since(clock.started)).as_secs().saturating_sub(ramp).max(1);
    let plan = format!("{users},{ramp}s;{users},{hold}s;0,0s", users = shape.users);
    // A cap well above the highest scheduled rate: it only stops a runaway, the schedule sets the rate.
    let cap = (shape.peak_rate() * 2.0).ceil().max(10.0) as usize;
    let mut args = vec![
        "--host".to_owned(),
        host.to_owned(),
        "--test-plan".to_owned(),
        plan,
        "--throttle-requests".to_owned(),
        cap.to_string(),
        "--timeout".to_owned(),
        shape.timeout.as_secs().max(1).to_string(),
        "--no-gzip".to_owned(),
        "--no-telnet".to_owned(),
        "--no-print-metrics".to_owned(),
        "--no-error-summary".to_owned(),
        "--quiet".to_owned(),
        // The transaction's time includes the wait for its due time, so goose's transaction figures would mislead;
        // its per-request figures are kept.
        "--no-transaction-metrics".to_owned(),
        "--no-scenario-metrics".to_owned(),
    ];
    for report in goose_reports {
        args.push("--report-file".to_owned());
        args.push(report.display().to_string());
    }
    let config = goose::config::GooseConfiguration::parse_args_default(&args)?;
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario!("users").register_transaction(transaction))
        .execute()
        .await?;
    counting.count_missed();
    Ok(metrics)
}

struct Engine {
    shape: Shape,
    clock: Clock,
    workload: Arc<dyn Workload>,
    recorder: Arc<Recorder>,
    /// Per user: what it still owes, kept outside goose's session so that it survives the user being stopped.
    owed: Vec<Mutex<Owed>>,
    /// Per user: its timer, kept between its waits (a timerfd registered with the runtime once).
    timers: Vec<Mutex<Option<Delay>>>,
}

/// A user's requests not yet recorded.
#[derive(Debug, Default)]
struct Owed {
    /// Sent (or about to be) and not answered yet.
    in_flight: Option<(Planned, Instant)>,
    /// The due time after that one.
    next_due: Option<Instant>,
}

impl Engine {
    fn interval_at(&self, due: Instant) -> Duration {
        let since_steady = due.checked_duration_since(self.clock.steady_start);
        Duration::from_secs_f64(self.shape.users as f64 / self.shape.rate_at(since_steady))
    }

    async fn step(&self, user: &mut GooseUser) {
        let index = user.weighted_users_index;
        let mut ctx =
            user.get_session_data_mut::<Slot>().and_then(|slot| slot.0.take()).unwrap_or_else(|| UserCtx::new(index));
        let due = match ctx.next_due {
            Some(due) => due,
            None => {
                // Users start spread over one interval, not all at once.
                let now = Instant::now();
                now + self.interval_at(now).mul_f64(ctx.rng.random::<f64>())
            }
        };
        if due >= self.clock.steady_end {
            // The schedule is over: idle until goose stops the user.
            tokio::time::sleep_until(self.clock.end.into()).await;
            ctx.next_due = Some(due);
            user.set_session_data(Slot(Some(ctx)));
            return;
        }
        ctx.next_due = Some(due + self.interval_at(due));
        let planned = self.workload.plan(&mut ctx);
        if let Some(owed) = self.owed.get(ctx.index) {
            *owed.lock().unwrap() = Owed { in_flight: Some((planned, due)), next_due: ctx.next_due };
        }
        if Instant::now() < due {
            self.wait_until(ctx.index, due).await;
            // Only a user that waited for its due time measures the load generator's own lateness; one that is
            // behind was held up by the service.
            self.recorder.record_wake_up(due, Instant::now());
        }
        let performed = self.workload.perform(planned, user, &mut ctx).await;
        self.recorder.record(&performed, due, Instant::now());
        if let Some(owed) = self.owed.get(ctx.index) {
            owed.lock().unwrap().in_flight = None;
        }
        user.set_session_data(Slot(Some(ctx)));
    }

    /// Waits for `due`. Not with tokio's timer: it fires on whole milliseconds, rounding up, which would add about
    /// 1 ms of the load generator's own to every due-time latency. A timerfd wakes this task from the runtime's own
    /// reactor to the microsecond, with no thread in between (a timer thread, as async-io's, cost a fifth of the
    /// generator's CPU in hand-offs). What is left, the reactor's and the task's wake-up, is what `lateness` measures.
    async fn wait_until(&self, user: usize, due: Instant) {
        let slot = self.timers.get(user);
        let kept = slot.and_then(|s| s.lock().unwrap().take());
        let delay = match kept {
            Some(mut delay) => {
                delay.reset(due);
                Ok(delay)
            }
            None => Delay::new(due),
        };
        let waited = match delay {
            Ok(mut delay) => {
                let waited = (&mut delay).await.is_ok();
                if waited && let Some(slot) = slot {
                    *slot.lock().unwrap() = Some(delay);
                }
                waited
            }
            Err(_) => false,
        };
        // No file descriptor left for a timer, or the timer failed: tokio's, a millisecond coarser, rather than no
        // pacing.
        if !waited {
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// After the users stopped: every request due in the steady state that was not answered is a miss.
    fn count_missed(&self) {
        let end = self.clock.end.max(Instant::now());
        for (index, owed) in self.owed.iter().enumerate() {
            let owed = std::mem::take(&mut *owed.lock().unwrap());
            if let Some((planned, due)) = owed.in_flight {
                self.recorder.record_missed(planned, due, end);
            }
            // The user's own draws are gone with its session; a generator seeded from it draws the rest.
            let mut ctx = UserCtx::new(index);
            let mut due = owed.next_due;
            while let Some(d) = due.filter(|&d| d < self.clock.steady_end) {
                let planned = self.workload.plan(&mut ctx);
                self.recorder.record_missed(planned, d, end);
                due = Some(d + self.interval_at(d));
            }
        }
    }
}

/// Latency, counts and outcomes of one request name or class, over the steady state.
struct Series {
    class: Class,
    count: u64,
    errors: u64,
    missed: u64,
    corrected: Histogram<u64>,
    sent: Histogram<u64>,
    status: BTreeMap<String, u64>,
    messages: HashMap<String, u64>,
    /// Requests the service shed (503), the due-time latency of the others, the send-time latency of those.
    shed: u64,
    admitted: Histogram<u64>,
    refused: Histogram<u64>,
}

/// The status a service answers with when it sheds load.
const SHED: u16 = 503;

/// Microseconds, from 1 µs to an hour, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Series {
    fn new(class: Class) -> Self {
        let histogram = latency_histogram;
        Series {
            class,
            count: 0,
            errors: 0,
            missed: 0,
            corrected: histogram(),
            sent: histogram(),
            status: BTreeMap::new(),
            messages: HashMap::new(),
            shed: 0,
            admitted: histogram(),
            refused: histogram(),
        }
    }

    fn add(&mut self, p: &Performed, corrected: Duration, sent: Duration) {
        self.count += 1;
        self.corrected.saturating_record(corrected.as_micros().max(1) as u64);
        self.sent.saturating_record(sent.as_micros().max(1) as u64);
        if p.status == Some(SHED) {
            self.shed += 1;
            self.refused.saturating_record(sent.as_micros().max(1) as u64);
        } else {
            self.admitted.saturating_record(corrected.as_micros().max(1) as u64);
        }
        let status = p.status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        *self.status.entry(status).or_default() += 1;
        if let Some(message) = &p.error {
            self.errors += 1;
            *self.messages.entry(message.clone()).or_default() += 1;
        }
    }

    /// A request due and never answered: counted, with its latency from the due time, and its outcome a miss.
    fn add_missed(&mut self, corrected: Duration) {
        self.count += 1;
        self.missed += 1;
        self.corrected.saturating_record(corrected.as_micros().max(1) as u64);
        *self.status.entry("missed".to_owned()).or_default() += 1;
    }

    fn stats(&self) -> RequestStats {
        let mut top: Vec<ErrorCount> =
            self.messages.iter().map(|(message, &count)| ErrorCount { message: message.clone(), count }).collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.message.cmp(&b.message)));
        top.truncate(10);
        RequestStats {
            class: self.class,
            count: self.count,
            errors: self.errors,
            missed: self.missed,
            error_rate: ratio(self.errors + self.missed, self.count),
            corrected: percentiles(&self.corrected),
            sent: percentiles(&self.sent),
            corrected_curve: curve(&self.corrected),
            sent_curve: curve(&self.sent),
            status: self.status.clone(),
            top_errors: top,
            shedding: (self.shed > 0).then(|| Shedding {
                shed: self.shed,
                admitted: percentiles(&self.admitted),
                refused: percentiles(&self.refused),
            }),
            p95_windows_ms: Vec::new(),
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

/// Percentiles from the median to the maximum, spaced by "nines", for charts.
fn curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    const QUANTILES: [f64; 14] =
        [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0];
    QUANTILES.iter().map(|&q| [q * 100.0, h.value_at_quantile(q) as f64 / 1000.0]).collect()
}

#[derive(Default)]
struct Figures {
    by_name: BTreeMap<&'static str, Series>,
    by_class: BTreeMap<Class, Series>,
    /// Per second of the steady state: requests and their failures (errors and misses).
    timeline: Vec<(u64, u64)>,
    /// Per class, per second of the steady state (by due time): each request's corrected latency in µs.
    by_second: BTreeMap<Class, Vec<Vec<u32>>>,
    /// How long after its due time a waiting user woke up, in µs.
    lateness: Option<Histogram<u64>>,
}

impl Figures {
    fn add_to_second(&mut self, class: Class, second: usize, corrected: Duration, failed: bool) {
        let seconds = self.timeline.len();
        if let Some(slot) = self.timeline.get_mut(second) {
            slot.0 += 1;
            slot.1 += u64::from(failed);
            let per_second = self.by_second.entry(class).or_insert_with(|| vec![Vec::new(); seconds]);
            per_second[second].push(corrected.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
}

/// The p95 of each window of consecutive seconds holding at least [`WINDOW_MIN_REQUESTS`] (the last, short
/// window joins the one before it), in milliseconds.
pub fn window_p95s(seconds: &[Vec<u32>]) -> Vec<f64> {
    let mut windows: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for second in seconds {
        current.extend_from_slice(second);
        if current.len() >= WINDOW_MIN_REQUESTS {
            windows.push(std::mem::take(&mut current));
        }
    }
    match windows.last_mut() {
        Some(last) => last.extend(current),
        None if !current.is_empty() => windows.push(current),
        None => {}
    }
    windows
        .into_iter()
        .map(|mut w| {
            w.sort_unstable();
            // Nearest rank.
            let rank = ((0.95 * w.len() as f64).ceil() as usize).clamp(1, w.len());
            f64::from(w[rank - 1]) / 1000.0
        })
        .collect()
}

/// Everything measured, shared by all users.
pub struct Recorder {
    clock: Clock,
    figures: Mutex<Figures>,
    /// Over the whole run, for the progress line.
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// The latest error message, for the progress line.
    pub last_error: Mutex<Option<String>>,
}

impl Recorder {
    pub fn new(clock: Clock) -> Self {
        let seconds = clock.steady_end.duration_since(clock.steady_start).as_secs() as usize;
        Recorder {
            clock,
            figures: Mutex::new(Figures { timeline: vec![(0, 0); seconds.max(1)], ..Figures::default() }),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn record(&self, p: &Performed, due: Instant, done: Instant) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = &p.error {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().unwrap() = Some(format!("{}: {error}", p.name));
        }
        if !self.clock.in_steady(due) {
            return;
        }
        let corrected = done.saturating_duration_since(due);
        let sent = done.saturating_duration_since(p.sent);
        let mut figures = self.figures.lock().unwrap();
        figures.by_name.entry(p.name).or_insert_with(|| Series::new(p.class)).add(p, corrected, sent);
        figures.by_class.entry(p.class).or_insert_with(|| Series::new(p.class)).add(p, corrected, sent);
        let second = due.duration_since(self.clock.steady_start).as_secs() as usize;
        figures.add_to_second(p.class, second, corrected, p.error.is_some());
    }

    /// A request due at `due` that had no answer when the run ended at `end`.
    pub fn record_missed(&self, planned: Planned, due: Instant, end: Instant) {
        if !self.clock.in_steady(due) {
            return;
        }
        let corrected = end.saturating_duration_since(due);
        let mut figures = self.figures.lock().unwrap();
        figures.by_name.entry(planned.name).or_insert_with(|| Series::new(planned.class)).add_missed(corrected);
        figures.by_class.entry(planned.class).or_insert_with(|| Series::new(planned.class)).add_missed(corrected);
        let second = due.duration_since(self.clock.steady_start).as_secs() as usize;
        figures.add_to_second(planned.class, second, corrected, true);
    }

    /// A user that waited for `due` woke up at `woke`.
    pub fn record_wake_up(&self, due: Instant, woke: Instant) {
        if !self.clock.in_steady(due) {
            return;
        }
        let late = woke.saturating_duration_since(due).as_micros().max(1) as u64;
        let mut figures = self.figures.lock().unwrap();
        figures.lateness.get_or_insert_with(latency_histogram).saturating_record(late);
    }

    /// How late waiting users woke up, over the steady state.
    pub fn lateness(&self) -> Option<Percentiles> {
        self.figures.lock().unwrap().lateness.as_ref().map(percentiles)
    }

    pub fn by_class(&self) -> BTreeMap<Class, RequestStats> {
        let figures = self.figures.lock().unwrap();
        figures
            .by_class
            .iter()
            .map(|(c, s)| {
                let mut stats = s.stats();
                stats.p95_windows_ms = figures.by_second.get(c).map(|s| window_p95s(s)).unwrap_or_default();
                (*c, stats)
            })
            .collect()
    }

    pub fn by_name(&self) -> BTreeMap<String, RequestStats> {
        self.figures.lock().unwrap().by_name.iter().map(|(n, s)| ((*n).to_owned(), s.stats())).collect()
    }

    /// Requests and errors per second of the steady state.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.figures
            .lock()
            .unwrap()
            .timeline
            .iter()
            .enumerate()
            .map(|(t, &(requests, errors))| TimelinePoint {
                t_s: t as u32,
                requests,
                errors,
                server_cpu_cores: None,
                server_rss_bytes: None,
            })
            .collect()
    }

    /// Writes one HdrHistogram V2 log per class and per request name into `dir`, each with a `corrected`
    /// and a `sent` histogram (microseconds); returns `class/NAME` and `request/NAME` → file name.
    pub fn write_histograms(&self, dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
        let figures = self.figures.lock().unwrap();
        let mut written = BTreeMap::new();
        let series = figures
            .by_class
            .iter()
            .map(|(c, s)| (format!("class/{c}"), format!("class-{c}.hlog"), s))
            .chain(figures.by_name.iter().map(|(n, s)| (format!("request/{n}"), format!("request-{n}.hlog"), s)));
        let start = self.clock.wall(self.clock.steady_start);
        let length = self.clock.steady_end.duration_since(self.clock.steady_start);
        for (key, file, s) in series {
            let mut out = Vec::new();
            let mut serializer = V2DeflateSerializer::new();
            let mut log = IntervalLogWriterBuilder::new()
                .add_comment(&format!("fwb-loadtest {key}: latency in microseconds over the steady state"))
                .with_start_time(start)
                .with_base_time(start)
                .with_max_value_divisor(1000.0)
                .begin_log_with(&mut out, &mut serializer)?;
            for (tag, h) in [("corrected", &s.corrected), ("sent", &s.sent)] {
                log.write_histogram(h, Duration::ZERO, length, Tag::new(tag))
                    .map_err(|e| anyhow::anyhow!("writing {file}: {e:?}"))?;
            }
            drop(log);
            std::fs::write(dir.join(&file), out)?;
            written.insert(key, file);
        }
        Ok(written)
    }
}
