//! The waits, intervals and limits every runtime applies alike, so that a roll-out,
//! a task or a failed version reads the same on `process` and on `docker`.

use std::time::Duration;

/// How long a process (group) or container may take to exit after SIGTERM before
/// it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Interval between health checks.
pub(crate) const HEALTH_POLL: Duration = Duration::from_millis(250);
/// Without any health check, a version is healthy once it has run this long.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);
/// The longest one HTTP health check may take.
pub(crate) const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest time a command health check is given, even at the deadline.
pub(crate) const MIN_COMMAND_PROBE: Duration = Duration::from_secs(1);

/// How long a task's output is still read once the task has ended: a process that
/// left the task (a daemon it started) may hold its output open forever.
pub(crate) const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Longer output lines are forwarded in pieces of this many bytes.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// How much of a failed version's output is shown in the roll-out's log: its last
/// lines, from at most its last bytes.
pub(crate) const FAILED_OUTPUT_LINES: usize = 40;
pub(crate) const FAILED_OUTPUT_BYTES: u64 = 64 * 1024;
