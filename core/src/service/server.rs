//! The service side: a Unix-domain socket, a reader and a writer thread per connection, and per
//! loaded model one lane (an interactive and a bulk queue per tower) with one inference thread
//! that takes everything queued, up to the maximum batch, whenever it is free.
//!
//! No thread here calls into Postgres: the background worker's main thread starts the server,
//! watches [`Handle::fatal`] and stops it.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::wire::{self, Input, ModelInfo, ModelSpec, Priority, Reply, Request, Tower};
use crate::error::{ClipError, ErrorKind, Result};
use crate::model::{ModelFolder, ModelOptions};
use crate::runtime::{self, ClipModel, Device, SessionOptions};
use crate::tokenize::TokenBatch;
use crate::Interrupt;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// libonnxruntime.so (read once: the process keeps the first library it loads)
    pub library: String,
    /// where and with how many intra-op threads (0: ONNX Runtime's default) models run
    pub device: Device,
    pub threads: usize,
    /// the most items one model call takes (a single request larger than this runs alone)
    pub max_batch: usize,
    /// how long a batch that is not full waits for more (0: run what is there)
    pub batch_wait: Duration,
    /// the most bulk items queued per model; a connection that would go over waits (its
    /// socket fills, and its backend waits, cancellably)
    pub max_queued: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running service.
pub struct Handle {
    shared: Arc<Shared>,
    path: PathBuf,
}

struct Shared {
    cfg: Mutex<Config>,
    lanes: Mutex<HashMap<ModelSpec, Arc<Lane>>>,
    stop: AtomicBool,
    fatal: Mutex<Option<String>>,
    connections: AtomicUsize,
    next_conn: AtomicU64,
    started: Instant,
    /// lines for the server log, written by the worker's main thread (Handle::take_log)
    log: Mutex<Vec<String>>,
}

/// One model: its queues, its inference thread's state and its counters.
struct Lane {
    spec: ModelSpec,
    state: Mutex<Queues>,
    work: Condvar,
    room: Condvar,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Queues {
    /// [tower][priority]
    q: [[VecDeque<Job>; 2]; 2],
    bulk_items: usize,
    closed: bool,
}

struct Job {
    conn: Arc<Conn>,
    id: u64,
    input: Input,
}

/// A describe request waits in the lane like a job, answered once the model is loaded.
enum Work {
    Batch(Tower, Vec<Job>),
    Describe(Vec<(Arc<Conn>, u64)>),
}

#[derive(Default)]
struct Stats {
    info: Option<ModelInfo>,
    load_s: f64,
    batches: [u64; 2],
    items: [u64; 2],
    busy: [Duration; 2],
    last_error: Option<String>,
    describe: Vec<(Arc<Conn>, u64)>,
}

struct Conn {
    id: u64,
    out: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
}

impl Conn {
    fn reply(&self, id: u64, r: &Reply) {
        if let Some(tx) = lock(&self.out).as_ref() {
            // a closed connection drops its replies
            let _ = tx.send(wire::encode_reply(id, r));
        }
    }
}

fn ti(t: Tower) -> usize {
    match t {
        Tower::Visual => 0,
        Tower::Text => 1,
    }
}

fn pi(p: Priority) -> usize {
    match p {
        Priority::Interactive => 0,
        Priority::Bulk => 1,
    }
}

/// Start threads with every signal blocked: they live in a Postgres process.
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    runtime::with_signals_blocked(|| {
        thread::Builder::new().name(name).spawn(f).expect("cannot start a thread")
    })
}

/// Bind the socket at `path` (a stale one from a previous run is removed; only the owner may
/// connect) and start serving.
pub fn start(path: &Path, cfg: Config) -> std::io::Result<Handle> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let shared = Arc::new(Shared {
        cfg: Mutex::new(cfg),
        lanes: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
        connections: AtomicUsize::new(0),
        next_conn: AtomicU64::new(1),
        started: Instant::now(),
        log: Mutex::new(Vec::new()),
    });
    let s = shared.clone();
    spawn("pg_clip-accept".into(), move || {
        for stream in listener.incoming() {
            if s.stop.load(Ordering::Relaxed) {
                break;
            }
            match stream {
                Ok(stream) => serve_connection(&s, stream),
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Ok(Handle { shared, path: path.to_path_buf() })
}

impl Handle {
    /// Set when an inference thread panicked: the worker should exit (and be restarted).
    pub fn fatal(&self) -> Option<String> {
        lock(&self.shared.fatal).clone()
    }

    /// What happened since the last call, for the server log: models loaded (where, how long)
    /// or failing to load.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.shared.log))
    }

    /// New settings (a reload): batching at once; a new device or thread count closes every
    /// lane, so that models load again with it on their next request.
    pub fn reconfigure(&self, cfg: Config) {
        let reload = {
            let mut old = lock(&self.shared.cfg);
            let reload = (old.device, old.threads) != (cfg.device, cfg.threads);
            *old = cfg;
            reload
        };
        if reload {
            let lanes: Vec<Arc<Lane>> = lock(&self.shared.lanes).values().cloned().collect();
            for lane in lanes {
                close_lane(&self.shared, &lane, reloading());
            }
        }
    }

    pub fn status_json(&self) -> String {
        status_json(&self.shared)
    }

    /// Stop accepting, close the lanes (queued requests fail) and remove the socket.
    pub fn stop(self) {
        let lanes: Vec<Arc<Lane>> = {
            let mut lanes = lock(&self.shared.lanes);
            self.shared.stop.store(true, Ordering::Relaxed);
            lanes.drain().map(|(_, l)| l).collect()
        };
        for lane in lanes {
            close_lane(&self.shared, &lane, stopping());
            lane.work.notify_all();
        }
        // wake the accept loop so it sees the stop
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_connection(shared: &Arc<Shared>, stream: UnixStream) {
    let Ok(write_half) = stream.try_clone() else { return };
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let conn =
        Arc::new(Conn { id: shared.next_conn.fetch_add(1, Ordering::Relaxed), out: Mutex::new(Some(tx)) });
    shared.connections.fetch_add(1, Ordering::Relaxed);
    // the writer: replies never block an inference thread on a slow reader
    spawn(format!("pg_clip-conn-{}-w", conn.id), move || {
        let mut w = write_half;
        for frame in rx {
            if w.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = w.shutdown(std::net::Shutdown::Both);
    });
    let s = shared.clone();
    spawn(format!("pg_clip-conn-{}-r", conn.id), move || {
        let mut r = stream;
        let mut frames = wire::Frames::default();
        let mut buf = vec![0u8; 1 << 16];
        'read: loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            frames.push(&buf[..n]);
            loop {
                match frames.next_frame() {
                    Ok(Some(f)) => match wire::decode_request(&f) {
                        Ok((id, req)) => handle(&s, &conn, id, req),
                        Err(_) => break 'read, // not a pg_clip backend, or a broken one: hang up
                    },
                    Ok(None) => break,
                    Err(_) => break 'read,
                }
            }
        }
        // drop what this connection still has queued, and stop its writer
        drop_queued(&s, |j| Arc::ptr_eq(&j.conn, &conn));
        lock(&conn.out).take();
        s.connections.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Drop the queued jobs `gone` picks, from every lane (their senders gave up or hung up).
fn drop_queued(s: &Shared, mut gone: impl FnMut(&Job) -> bool) {
    for lane in lock(&s.lanes).values() {
        let mut st = lock(&lane.state);
        let mut bulk_dropped = 0;
        for queues in st.q.iter_mut() {
            for (p, q) in queues.iter_mut().enumerate() {
                q.retain(|j| {
                    let dropped = gone(j);
                    if dropped && p == pi(Priority::Bulk) {
                        bulk_dropped += j.input.len();
                    }
                    !dropped
                });
            }
        }
        st.bulk_items -= bulk_dropped;
        drop(st);
        lane.room.notify_all();
    }
}

fn handle(s: &Arc<Shared>, conn: &Arc<Conn>, id: u64, req: Request) {
    match req {
        Request::Status => conn.reply(id, &Reply::Status(status_json(s))),
        Request::Cancel { id: which } => drop_queued(s, |j| j.id == which && Arc::ptr_eq(&j.conn, conn)),
        Request::Describe { model } => {
            let Some(lane) = open_lane(s, &model) else { return conn.reply(id, &Reply::Failed(stopping())) };
            // (under the queue lock, which the inference thread holds while it looks for work)
            let st = lock(&lane.state);
            let mut stats = lock(&lane.stats);
            match stats.info.clone() {
                Some(info) => conn.reply(id, &Reply::Model(info)),
                None => stats.describe.push((conn.clone(), id)),
            }
            drop((stats, st));
            lane.work.notify_all();
        }
        Request::Embed { model, priority, input } => {
            if input.is_empty() {
                return conn.reply(id, &Reply::Vectors(Vec::new()));
            }
            let n = input.len();
            // a lane closed meanwhile (its model failed to load, or its files changed) is
            // replaced by a new one, which tries again
            let lane = loop {
                let Some(lane) = open_lane(s, &model) else {
                    return conn.reply(id, &Reply::Failed(stopping()));
                };
                let mut st = lock(&lane.state);
                // back-pressure: a bulk request waits for room (one larger than the limit
                // waits for an empty queue); interactive ones never wait
                if priority == Priority::Bulk {
                    let max_queued = lock(&s.cfg).max_queued;
                    while !st.closed && st.bulk_items > 0 && st.bulk_items + n > max_queued {
                        st = lane.room.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                }
                if st.closed {
                    continue;
                }
                if priority == Priority::Bulk {
                    st.bulk_items += n;
                }
                st.q[ti(input.tower())][pi(priority)].push_back(Job { conn: conn.clone(), id, input });
                drop(st);
                break lane;
            };
            lane.work.notify_all();
        }
    }
}

fn reloading() -> ClipError {
    ClipError::new(
        ErrorKind::ServiceUnavailable,
        "the pg_clip inference service is loading the model again with new settings",
    )
    .hint("Run the statement again.")
}

fn stopping() -> ClipError {
    ClipError::new(ErrorKind::ServiceUnavailable, "the pg_clip inference service is stopping")
        .hint("Run the statement again; the service restarts by itself.")
}

/// The lane of `spec`, started on first use; None once the service is stopping.
fn open_lane(s: &Arc<Shared>, spec: &ModelSpec) -> Option<Arc<Lane>> {
    let mut lanes = lock(&s.lanes);
    if s.stop.load(Ordering::Relaxed) {
        return None;
    }
    if let Some(l) = lanes.get(spec) {
        return Some(l.clone());
    }
    let lane = Arc::new(Lane {
        spec: spec.clone(),
        state: Mutex::new(Queues::default()),
        work: Condvar::new(),
        room: Condvar::new(),
        stats: Mutex::new(Stats::default()),
    });
    lanes.insert(spec.clone(), lane.clone());
    let (s2, l2) = (s.clone(), lane.clone());
    spawn(format!("pg_clip-infer-{}", spec.name), move || {
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| infer_loop(&s2, &l2)));
        if let Err(p) = out {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            *lock(&s2.fatal) = Some(format!("inference thread of model \"{}\": {msg}", l2.spec.name));
            close_lane(&s2, &l2, stopping());
        }
    });
    Some(lane)
}

/// Take the lane out of service: everything queued fails with `err`; the next request for
/// the model starts a new lane (and loads it again).
fn close_lane(s: &Shared, lane: &Arc<Lane>, err: ClipError) {
    {
        let mut lanes = lock(&s.lanes);
        if lanes.get(&lane.spec).is_some_and(|l| Arc::ptr_eq(l, lane)) {
            lanes.remove(&lane.spec);
        }
    }
    let mut st = lock(&lane.state);
    st.closed = true;
    let jobs: Vec<Job> = st.q.iter_mut().flat_map(|t| t.iter_mut()).flat_map(|q| q.drain(..)).collect();
    st.bulk_items = 0;
    drop(st);
    lane.room.notify_all();
    for j in jobs {
        j.conn.reply(j.id, &Reply::Failed(err.clone()));
    }
    for (c, id) in lock(&lane.stats).describe.drain(..) {
        c.reply(id, &Reply::Failed(err.clone()));
    }
}

fn open(spec: &ModelSpec) -> Result<ModelFolder> {
    let options = ModelOptions::from_json(&spec.options).map_err(|m| {
        ClipError::new(ErrorKind::InvalidModel, format!("model \"{}\" has invalid options: {m}", spec.name))
    })?;
    let folder = ModelFolder::open(Path::new(&spec.folder), &options)?;
    let now = folder.stamp()?;
    if now != spec.stamp {
        return Err(ClipError::model_changed(&spec.name, &spec.folder, &spec.stamp, &now, &options));
    }
    Ok(folder)
}

fn load(s: &Shared, spec: &ModelSpec) -> Result<ClipModel> {
    let cfg = lock(&s.cfg).clone();
    let env = runtime::environment(&cfg.library)?;
    let folder = open(spec)?;
    ClipModel::load(&env, folder, &SessionOptions { device: cfg.device, intra_op_threads: cfg.threads })
}

fn infer_loop(s: &Arc<Shared>, lane: &Arc<Lane>) {
    let t0 = Instant::now();
    let mut model = match load(s, &lane.spec) {
        Ok(m) => m,
        Err(e) => {
            lock(&s.log).push(format!("model \"{}\" could not be loaded: {e}", lane.spec.name));
            lock(&lane.stats).last_error = Some(e.to_string());
            return close_lane(s, lane, e);
        }
    };
    let device = lock(&s.cfg).device;
    lock(&s.log).push(format!(
        "loaded model \"{}\" from {} on {}{} in {:.2} s",
        lane.spec.name,
        lane.spec.folder,
        format!("{:?}", model.device_used).to_lowercase(),
        if device == Device::Auto && model.device_used == Device::Cpu {
            " (pg_clip.device is auto and CUDA is not available)"
        } else {
            ""
        },
        t0.elapsed().as_secs_f64()
    ));
    let info = ModelInfo::of(&model);
    let mut fingerprint = model.folder.fingerprint();
    {
        let mut stats = lock(&lane.stats);
        stats.info = Some(info);
        stats.load_s = t0.elapsed().as_secs_f64();
    }
    while let Some(work) = next_work(s, lane) {
        let (tower, jobs) = match work {
            Work::Describe(waiting) => {
                let info = lock(&lane.stats).info.clone().expect("loaded");
                for (c, id) in waiting {
                    c.reply(id, &Reply::Model(info.clone()));
                }
                continue;
            }
            Work::Batch(t, jobs) => (t, jobs),
        };
        // the files must still be the registered ones (a changed file is re-hashed)
        let now = model.folder.fingerprint();
        if now != fingerprint {
            if let Err(e) = open(&lane.spec) {
                for j in &jobs {
                    j.conn.reply(j.id, &Reply::Failed(e.clone()));
                }
                lock(&lane.stats).last_error = Some(e.to_string());
                return close_lane(s, lane, e);
            }
            fingerprint = now;
        }
        let started = Instant::now();
        let items: usize = jobs.iter().map(|j| j.input.len()).sum();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            if tests::PANIC_NEXT_BATCH.swap(false, Ordering::Relaxed) {
                panic!("a panic the test asked for");
            }
            match tower {
                Tower::Visual => run_images(&mut model, &jobs),
                Tower::Text => run_texts(&mut model, &jobs),
            }
        }));
        // A panic ends the lane (and, through Handle::fatal, the service); the batch's callers
        // are told now rather than left waiting for a reply that will not come.
        let result = run.unwrap_or_else(|p| {
            for j in &jobs {
                j.conn.reply(j.id, &Reply::Failed(stopping()));
            }
            std::panic::resume_unwind(p)
        });
        let mut stats = lock(&lane.stats);
        stats.batches[ti(tower)] += 1;
        stats.items[ti(tower)] += items as u64;
        stats.busy[ti(tower)] += started.elapsed();
        if let Err(e) = &result {
            stats.last_error = Some(e.to_string());
        }
        drop(stats);
        match result {
            Ok(replies) => {
                for (j, r) in jobs.iter().zip(replies) {
                    j.conn.reply(j.id, &r);
                }
            }
            Err(e) => {
                for j in &jobs {
                    j.conn.reply(j.id, &Reply::Failed(e.clone()));
                }
            }
        }
    }
}

/// Wait for work: describes first, then the interactive queues, then the bulk ones; take
/// everything of one tower up to the maximum batch (waiting up to batch_wait for more when it
/// is not full). None once the lane is closed.
fn next_work(s: &Shared, lane: &Lane) -> Option<Work> {
    let mut st = lock(&lane.state);
    loop {
        if st.closed {
            return None;
        }
        let waiting: Vec<_> = lock(&lane.stats).describe.drain(..).collect();
        if !waiting.is_empty() {
            return Some(Work::Describe(waiting));
        }
        let pick = [(Tower::Visual, 0), (Tower::Text, 0), (Tower::Text, 1), (Tower::Visual, 1)]
            .into_iter()
            .find(|&(t, p)| !st.q[ti(t)][p].is_empty())
            .map(|(t, _)| t);
        let Some(tower) = pick else {
            st = lane.work.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let mut jobs = Vec::new();
        let mut items = 0;
        let (max_batch, wait) = {
            let c = lock(&s.cfg);
            (c.max_batch, c.batch_wait)
        };
        let deadline = Instant::now() + wait;
        loop {
            for p in 0..2 {
                while let Some(j) = st.q[ti(tower)][p].front() {
                    let n = j.input.len();
                    if items > 0 && items + n > max_batch {
                        break;
                    }
                    let j = st.q[ti(tower)][p].pop_front().expect("front exists");
                    if p == 1 {
                        st.bulk_items -= n;
                    }
                    items += n;
                    jobs.push(j);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if items >= max_batch || left.is_zero() || st.closed {
                break;
            }
            st = lane.work.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        lane.room.notify_all();
        if st.closed {
            return None;
        }
        return Some(Work::Batch(tower, jobs));
    }
}

/// One model call for all the jobs' images.
fn run_images(model: &mut ClipModel, jobs: &[Job]) -> Result<Vec<Reply>> {
    let per = model.folder.preprocess.tensor_len();
    let mut tensor = Vec::new();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for j in jobs {
        let Input::Images { n, tensor: t } = &j.input else { unreachable!("a visual lane job") };
        // a tensor for another image size (a backend with a stale folder) fails alone
        outcomes.push(if t.len() == n * per {
            tensor.extend_from_slice(t);
            Ok(*n)
        } else {
            Err(ClipError::new(
                ErrorKind::InvalidModel,
                format!("image tensors do not match the model's input of {per} values per image"),
            ))
        });
    }
    let total: usize = outcomes.iter().flatten().sum();
    let rows = if total > 0 { model.run_visual(&tensor, total, Interrupt::NEVER)? } else { Vec::new() };
    Ok(replies(rows, outcomes))
}

/// Tokenize each job's texts on its own (a text that fails fails its job only), then one model
/// call for all.
fn run_texts(model: &mut ClipModel, jobs: &[Job]) -> Result<Vec<Reply>> {
    let mut all = TokenBatch { ids: Vec::new(), attention_mask: Vec::new() };
    let mut outcomes = Vec::with_capacity(jobs.len());
    for j in jobs {
        let Input::Texts(texts) = &j.input else { unreachable!("a text lane job") };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        outcomes.push(model.tokenizer().encode_batch(&refs).map(|b| {
            all.ids.extend(b.ids);
            all.attention_mask.extend(b.attention_mask);
            texts.len()
        }));
    }
    let total: usize = outcomes.iter().flatten().sum();
    let rows = if total > 0 { model.run_textual(&all, total, Interrupt::NEVER)? } else { Vec::new() };
    Ok(replies(rows, outcomes))
}

/// Each job's reply: its `n` rows of the batch's, in order, or its own error.
fn replies(rows: Vec<Vec<f32>>, outcomes: Vec<Result<usize>>) -> Vec<Reply> {
    let mut rows = rows.into_iter();
    outcomes
        .into_iter()
        .map(|o| match o {
            Ok(n) => Reply::Vectors(rows.by_ref().take(n).collect()),
            Err(e) => Reply::Failed(e),
        })
        .collect()
}

fn status_json(s: &Shared) -> String {
    let lanes: Vec<Arc<Lane>> = lock(&s.lanes).values().cloned().collect();
    let models: Vec<serde_json::Value> = lanes
        .iter()
        .map(|l| {
            let st = lock(&l.state);
            let queued: Vec<usize> =
                (0..2).map(|t| st.q[t].iter().map(|q| q.iter().map(|j| j.input.len()).sum::<usize>()).sum()).collect();
            drop(st);
            let stats = lock(&l.stats);
            let tower = |t: usize| {
                let busy = stats.busy[t].as_secs_f64();
                serde_json::json!({
                    "queued": queued[t],
                    "batches": stats.batches[t],
                    "items": stats.items[t],
                    "mean_batch": if stats.batches[t] > 0 { stats.items[t] as f64 / stats.batches[t] as f64 } else { 0.0 },
                    "items_per_s": if busy > 0.0 { stats.items[t] as f64 / busy } else { 0.0 },
                })
            };
            serde_json::json!({
                "model": l.spec.name,
                "folder": l.spec.folder,
                "device": stats.info.as_ref().map(|i| format!("{:?}", i.device_used).to_lowercase()),
                "load_s": stats.load_s,
                "visual": tower(0),
                "text": tower(1),
                "last_error": stats.last_error,
            })
        })
        .collect();
    let cfg = lock(&s.cfg).clone();
    serde_json::json!({
        "pid": std::process::id(),
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "connections": s.connections.load(Ordering::Relaxed),
        "max_batch": cfg.max_batch,
        "batch_wait_ms": cfg.batch_wait.as_secs_f64() * 1000.0,
        "models": models,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{poll_wait, Client};

    /// Set by a test: the next batch panics in the inference thread.
    pub(super) static PANIC_NEXT_BATCH: AtomicBool = AtomicBool::new(false);

    #[test]
    fn a_panic_in_inference_fails_its_batch_and_marks_the_service_fatal() {
        let library = std::env::var("PG_CLIP_ORT_LIB").expect("PG_CLIP_ORT_LIB names libonnxruntime.so");
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny-clip");
        let stamp = ModelFolder::open(&folder, &ModelOptions::default()).unwrap().stamp().unwrap();
        let spec = ModelSpec {
            name: "tiny".into(),
            folder: folder.display().to_string(),
            stamp,
            options: "{}".into(),
        };
        let path = std::env::temp_dir().join(format!("pg_clip_panic_test_{}.sock", std::process::id()));
        let cfg = Config {
            library,
            device: Device::Cpu,
            threads: 1,
            max_batch: 16,
            batch_wait: Duration::ZERO,
            max_queued: 16,
        };
        let handle = start(&path, cfg).unwrap();
        let mut client = Client::connect(&path).unwrap();
        let mut wait = |fd, write| poll_wait(fd, write, 1000);
        let text = || Input::Texts(vec!["a photo".into()]);
        assert_eq!(client.embed(&spec, Priority::Interactive, text(), &mut wait).unwrap().len(), 1);
        assert!(handle.fatal().is_none());

        PANIC_NEXT_BATCH.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let e = client.embed(&spec, Priority::Interactive, text(), &mut wait).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ServiceUnavailable, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "the caller waited {:?}", t0.elapsed());
        // the caller is told first; the thread's unwinding ends then
        let fatal = loop {
            match handle.fatal() {
                Some(f) => break f,
                None if t0.elapsed() < Duration::from_secs(5) => thread::sleep(Duration::from_millis(10)),
                None => panic!("the panic was not fatal"),
            }
        };
        assert!(fatal.contains("a panic the test asked for") && fatal.contains("\"tiny\""), "{fatal}");
        handle.stop();
    }
}
