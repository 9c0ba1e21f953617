//! Child processes that cannot outlive the test process, without `unsafe`.
//!
//! A test binary's shared control plane lives in a `static`, which Rust never drops, and a test
//! process can also die by a signal. `PR_SET_PDEATHSIG` would need `pre_exec` (unsafe, and unsafe
//! code is forbidden here). Instead each binary runs under a few lines of `sh` whose standard input
//! is a pipe that only the test process holds open (the *lifeline*; Rust creates it close-on-exec,
//! so no other child inherits it). When the test process ends, however it ends, the kernel closes
//! the pipe; the supervisor reads end-of-file, sends SIGTERM, and SIGKILL two seconds later (the
//! state is thrown away, so a long graceful shutdown buys nothing).
//! Stopping a process on purpose is the same move: drop the lifeline and wait.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// `sh -c SUPERVISOR supervisor BINARY ARGS...`; the lifeline is the supervisor's stdin.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
{
  while read -r _ <&3; do :; done
  kill -TERM "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$child" 2>/dev/null
} &
watcher=$!
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// `sh -c JANITOR janitor DIR PID...`: once the lifeline closes, waits (at most 20 s) for the
/// supervisors to exit, then removes the control plane's temporary directory.
const JANITOR: &str = r#"
dir=$1
shift
while read -r _; do :; done
# Gone or a zombie (nobody may reap an orphan here) both count as exited.
running() { state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [ "${state%% *}" != Z ]; }
i=0
for pid in "$@"; do
  while running "$pid" && [ "$i" -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
done
rm -rf "$dir"
"#;

/// A running child under a lifeline supervisor; stopped when dropped.
pub(crate) struct Supervised {
    pub name: &'static str,
    child: Child,
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

impl Supervised {
    /// Starts `binary args...` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, binary: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(SUPERVISOR).arg("sluice-testenv-supervisor").arg(binary).args(args);
        Self::spawn_command(name, command, Some(log))
    }

    /// Starts the janitor that removes `dir` once the test process is gone and `pids` have exited.
    pub fn janitor(dir: &Path, pids: &[u32]) -> anyhow::Result<Self> {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(JANITOR).arg("sluice-testenv-janitor").arg(dir);
        command.args(pids.iter().map(u32::to_string));
        command.stdout(Stdio::null()).stderr(Stdio::null());
        Self::spawn_command("janitor", command, None)
    }

    fn spawn_command(name: &'static str, mut command: Command, log: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(log) = log {
            let out = File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            command.stdout(out.try_clone()?).stderr(out);
        }
        let mut child =
            command.stdin(Stdio::piped()).spawn().with_context(|| format!("starting {name} under /bin/sh"))?;
        let lifeline = child.stdin.take();
        Ok(Self { name, child, lifeline, log: log.map(Path::to_owned).unwrap_or_default() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Closes the lifeline and waits for the process to exit (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        self.lifeline = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The supervisor did not finish in time; kill it (its watcher still stops the binary).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("({} is missing)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
