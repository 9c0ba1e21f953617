//! Child processes and what `/proc` says about them: start with captured logs, wait until ready,
//! stop (SIGTERM, then SIGKILL), and measure CPU time and resident memory of a process and its
//! descendants (LiteLLM's workers, Node's helpers).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Bytes of a child's output kept from its start (the rest is read and dropped, as a container
/// runtime would ship it elsewhere).
const LOG_HEAD: usize = 64 * 1024;
/// Bytes kept from the end of its output.
const LOG_TAIL: usize = 16 * 1024;

/// The first and the last bytes a process wrote.
#[derive(Default)]
struct LogBuffer {
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: u64,
}

impl LogBuffer {
    fn push(&mut self, bytes: &[u8]) {
        let room = LOG_HEAD.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..room]);
        let rest = &bytes[room..];
        self.tail.extend_from_slice(rest);
        if self.tail.len() > LOG_TAIL * 2 {
            let cut = self.tail.len() - LOG_TAIL;
            self.dropped += cut as u64;
            self.tail.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("\n[... {} bytes not kept ...]\n", self.dropped));
        }
        text.push_str(&String::from_utf8_lossy(&self.tail));
        text
    }
}

/// A started process whose stdout and stderr are drained into a bounded buffer.
pub struct Proc {
    /// Short name for messages.
    pub name: String,
    child: Child,
    log: Arc<Mutex<LogBuffer>>,
    started: Instant,
}

impl Proc {
    /// Starts `command` (stdin closed, output captured).
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("starting {name}: {command:?}"))?;
        let log = Arc::new(Mutex::new(LogBuffer::default()));
        if let Some(out) = child.stdout.take() {
            drain(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, log.clone());
        }
        LIVE.lock().unwrap_or_else(PoisonError::into_inner).insert(child.id());
        Ok(Self { name: name.to_owned(), child, log, started })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// What it wrote so far (head and tail).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).text()
    }

    /// Fails with its log if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); its output:\n{}", self.name, last_lines(&self.log(), 40));
        }
        Ok(())
    }

    /// Waits until `probe` succeeds, failing early if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration, mut probe: impl FnMut() -> bool) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if probe() {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {}s; its output:\n{}",
                    self.name,
                    timeout.as_secs(),
                    last_lines(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it and every process it started: SIGTERM, up to `grace`, then SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        LIVE.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.pid());
        let tree = descendants(self.pid());
        send_signal(self.pid(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in tree {
            if pid != self.pid() && Path::new(&format!("/proc/{pid}")).exists() {
                send_signal(pid, "KILL");
            }
        }
    }
}

/// Processes started and not yet stopped, for [`stop_children_on_signal`].
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// On SIGINT, SIGTERM or SIGHUP, kills every process started through [`Proc`] (and their
/// descendants) and exits, so an interrupted run leaves no simulator or gateway behind.
pub fn stop_children_on_signal() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
            else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            let live: Vec<u32> = LIVE.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect();
            for root in live {
                for pid in descendants(root) {
                    send_signal(pid, "KILL");
                }
            }
            eprintln!("sluice-bench: interrupted; its processes were stopped");
            std::process::exit(130);
        });
    });
}

fn drain(mut reader: impl Read + Send + 'static, log: Arc<Mutex<LogBuffer>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            log.lock().unwrap_or_else(PoisonError::into_inner).push(&buf[..n]);
        }
    });
}

fn send_signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// This program's path, also after a rebuild replaced the file (Linux then reports
/// `PATH (deleted)`; the new binary is at `PATH`).
pub fn own_exe() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    })
}

/// A free loopback port (bound and released; fine on a machine where nothing else races for it).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether something accepts connections at `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A blocking HTTP/1.1 GET on loopback: the status code, or `None`.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Write as _;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn page_bytes() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(4096)
    })
}

/// Fields of `/proc/PID/stat` after the command name (which may hold spaces): index 0 is the
/// state, 1 the parent pid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) this process has used.
pub fn self_cpu_secs() -> f64 {
    cpu_secs(&[std::process::id()])
}

/// CPU seconds (user + system) used so far by these processes.
pub fn cpu_secs(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&pid| stat_fields(pid))
        .map(|f| {
            let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            at(11) + at(12)
        })
        .sum();
    ticks as f64 / clock_ticks()
}

/// `root` and every live process descended from it.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok())) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut seen = BTreeSet::from([root]);
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                stack.push(child);
            }
        }
    }
    seen.into_iter().collect()
}

/// Resident set sizes summed over these processes, in bytes.
pub fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/statm")).ok())
        .filter_map(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum::<u64>()
        * page_bytes()
}

/// Proportional set sizes summed over these processes, in bytes (shared pages counted once over
/// the group: the honest figure for forked workers).
pub fn pss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// Samples the summed RSS of process trees every 100 ms until stopped; keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling the trees under `roots`.
    pub fn start(roots: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (stop_flag, peak_value) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let mut tree: Vec<u32> = Vec::new();
            let mut round = 0u32;
            while !stop_flag.load(Ordering::Relaxed) {
                if round.is_multiple_of(10) {
                    tree = roots.iter().flat_map(|&r| descendants(r)).collect();
                }
                round += 1;
                peak_value.fetch_max(rss_bytes(&tree), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, peak, thread: Some(thread) }
    }

    /// Stops and returns the peak in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// CPU seconds of several process trees between two moments.
#[derive(Clone, Debug)]
pub struct CpuWindow {
    roots: Vec<(String, Vec<u32>)>,
    before: Vec<f64>,
    started: Instant,
}

impl CpuWindow {
    /// Starts counting for each named group of root processes.
    pub fn start(groups: Vec<(String, Vec<u32>)>) -> Self {
        let roots: Vec<(String, Vec<u32>)> = groups
            .into_iter()
            .map(|(name, roots)| (name, roots.iter().flat_map(|&r| descendants(r)).collect()))
            .collect();
        let before = roots.iter().map(|(_, pids)| cpu_secs(pids)).collect();
        Self { roots, before, started: Instant::now() }
    }

    /// CPU seconds used by each group since the start, and the wall seconds elapsed.
    pub fn finish(&self) -> (BTreeMap<String, f64>, f64) {
        let used = self
            .roots
            .iter()
            .zip(&self.before)
            .map(|((name, pids), before)| (name.clone(), (cpu_secs(pids) - before).max(0.0)))
            .collect();
        (used, self.started.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buffer_keeps_head_and_tail() {
        let mut log = LogBuffer::default();
        log.push(&vec![b'a'; LOG_HEAD]);
        log.push(&vec![b'b'; LOG_TAIL * 3]);
        log.push(b"end");
        let text = log.text();
        assert!(text.starts_with("aaa"));
        assert!(text.ends_with("bbbend"));
        assert!(text.contains("bytes not kept"));
        assert!(text.len() < LOG_HEAD + LOG_TAIL * 2 + 100);
    }

    #[test]
    fn this_process_is_its_own_tree_and_uses_memory() {
        let me = std::process::id();
        assert!(descendants(me).contains(&me));
        assert!(rss_bytes(&[me]) > 0);
    }
}
