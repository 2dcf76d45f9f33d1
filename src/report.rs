//! What a build took: each step's wall time and whether the cache served it,
//! and the pull, unpack and push phases' bytes and wall time, for the step-end
//! log lines and the summary at the end; a step's running timer on the
//! terminal view while it runs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of work (pulling, unpacking, pushing) that may run several times
/// at once: its time is the wall time during which at least one ran, so
/// parallel downloads are not counted twice.
#[derive(Debug, Default)]
pub struct Phase {
    state: Mutex<PhaseState>,
}

#[derive(Debug, Default)]
struct PhaseState {
    running: usize,
    since: Option<Instant>,
    busy: Duration,
    bytes: u64,
    items: usize,
}

/// Totals of one phase so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTotals {
    pub(crate) busy: Duration,
    pub(crate) bytes: u64,
    /// Layers (or blobs) done.
    pub(crate) items: usize,
}

impl Phase {
    /// Starts one piece of work; it ends when the guard is dropped.
    pub(crate) fn begin(&self) -> PhaseGuard<'_> {
        if let Ok(mut s) = self.state.lock() {
            if s.running == 0 {
                s.since = Some(Instant::now());
            }
            s.running += 1;
        }
        PhaseGuard {
            phase: self,
            started: Instant::now(),
        }
    }

    pub fn totals(&self) -> PhaseTotals {
        let Ok(s) = self.state.lock() else {
            return PhaseTotals::default();
        };
        let open = s.since.map(|t| t.elapsed()).unwrap_or_default();
        PhaseTotals {
            busy: s.busy + open,
            bytes: s.bytes,
            items: s.items,
        }
    }
}

/// One piece of a phase's work under way.
pub(crate) struct PhaseGuard<'a> {
    phase: &'a Phase,
    started: Instant,
}

impl PhaseGuard<'_> {
    /// Counts the piece as done with `bytes` of `items` layers moved; returns
    /// its own wall time.
    pub(crate) fn done(self, bytes: u64, items: usize) -> Duration {
        if let Ok(mut s) = self.phase.state.lock() {
            s.bytes += bytes;
            s.items += items;
        }
        self.started.elapsed()
    }
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.phase.state.lock() {
            s.running = s.running.saturating_sub(1);
            if s.running == 0 {
                if let Some(t) = s.since.take() {
                    s.busy += t.elapsed();
                }
            }
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// Its layer came from the cache.
    Cached,
    Failed,
}

impl Outcome {
    /// BuildKit's plain progress words.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Done => "DONE",
            Outcome::Cached => "CACHED",
            Outcome::Failed => "ERROR",
        }
    }
}

/// One finished step.
#[derive(Debug, Clone)]
pub struct StepTime {
    /// The platform before its number when several are built (`linux/arm64 `,
    /// as BuildKit's progress names them), else empty.
    pub(crate) platform: String,
    /// Its `[n/total]` number.
    pub(crate) n: usize,
    pub(crate) total: usize,
    pub(crate) text: String,
    pub(crate) took: Duration,
    pub(crate) outcome: Outcome,
}

/// Every finished step of a build.
#[derive(Debug, Default)]
pub struct Steps {
    done: Mutex<Vec<StepTime>>,
    /// Steps under way by number, each with its timer on the terminal view.
    running: Mutex<std::collections::BTreeMap<(String, usize), crate::progress::StepTimer>>,
}

impl Steps {
    /// A step has started (its first line is logged by the caller).
    pub(crate) fn start(&self, platform: &str, (n, total): (usize, usize), text: &str) {
        let timer = crate::progress::step(&format!("[{platform}{n}/{total}] {text}"));
        if let Ok(mut r) = self.running.lock() {
            r.insert((platform.to_string(), n), timer);
        }
    }

    /// Logs the step's end (`[n/total] DONE 0.3s`, `CACHED`, `ERROR`) and keeps it.
    pub(crate) fn finish(&self, step: StepTime) {
        let secs = step.took.as_secs_f64();
        crate::log::emit_with(
            crate::log::Level::Info,
            format_args!(
                "[{}{}/{}] {} {}",
                step.platform,
                step.n,
                step.total,
                step.outcome.word(),
                seconds(step.took)
            ),
            serde_json::json!({
                "step": step.n,
                "steps": step.total,
                "instruction": step.text,
                "seconds": round3(secs),
                "cached": step.outcome == Outcome::Cached,
                "outcome": step.outcome.word(),
            }),
        );
        if let Ok(mut r) = self.running.lock() {
            r.remove(&(step.platform.clone(), step.n));
        }
        if let Ok(mut d) = self.done.lock() {
            d.push(step);
        }
    }

    pub fn all(&self) -> Vec<StepTime> {
        self.done.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The three slowest steps, slowest first (ties by step number).
pub(crate) fn slowest(steps: &[StepTime]) -> Vec<StepTime> {
    let mut s = steps.to_vec();
    s.sort_by(|a, b| b.took.cmp(&a.took).then(a.n.cmp(&b.n)));
    s.truncate(3);
    s
}

/// A duration as BuildKit's plain progress prints it: `0.3s`, `12.0s`, `2m03.4s`.
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let m = (s / 60.0).floor();
        format!("{}m{:04.1}s", m as u64, s - m * 60.0)
    }
}

/// Bytes for people: `340.1 MB` (decimal units, as the terminal view counts).
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

/// `bytes` over `d` as a rate, when the time is long enough to mean something.
pub(crate) fn rate(n: u64, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.01 {
        return String::new();
    }
    format!(", {}/s", bytes((n as f64 / s) as u64))
}

fn round3(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The build's last lines: its total time, how many steps the cache served,
/// each phase's bytes and time, and the three slowest steps.
pub fn summary(
    total: Duration,
    steps: &[StepTime],
    pull: PhaseTotals,
    unpack: PhaseTotals,
    push: PhaseTotals,
) {
    let cached = steps
        .iter()
        .filter(|s| s.outcome == Outcome::Cached)
        .count();
    let phase = |name: &str, p: PhaseTotals| {
        format!(
            "{name} {} {}, {} in {}",
            p.items,
            if p.items == 1 { "layer" } else { "layers" },
            bytes(p.bytes),
            seconds(p.busy)
        )
    };
    let phase_json = |p: PhaseTotals| serde_json::json!({"layers": p.items, "bytes": p.bytes, "seconds": round3(p.busy.as_secs_f64())});
    let slow = slowest(steps);
    crate::log::emit_with(
        crate::log::Level::Info,
        format_args!(
            "total {}: {} steps ({cached} cached); {}; {}; {}",
            seconds(total),
            steps.len(),
            phase("pulled", pull),
            phase("unpacked", unpack),
            phase("pushed", push),
        ),
        serde_json::json!({
            "total_seconds": round3(total.as_secs_f64()),
            "steps": steps.len(),
            "cached_steps": cached,
            "pull": phase_json(pull),
            "unpack": phase_json(unpack),
            "push": phase_json(push),
            "slowest": slow.iter().map(|s| serde_json::json!({
                "step": s.n,
                "instruction": s.text,
                "seconds": round3(s.took.as_secs_f64()),
            })).collect::<Vec<_>>(),
        }),
    );
    if slow.is_empty() {
        return;
    }
    // The instruction's word only: its whole text is on the step's first line,
    // and repeating a command's words after its output would confuse a reader
    // (or a script) looking for what the command printed.
    let list: Vec<String> = slow
        .iter()
        .map(|s| {
            let word = s.text.split_whitespace().next().unwrap_or_default();
            format!(
                "[{}{}/{}] {word} ({})",
                s.platform,
                s.n,
                s.total,
                seconds(s.took)
            )
        })
        .collect();
    crate::log_info!("slowest steps: {}", list.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_buildkit_prints_them() {
        assert_eq!(seconds(Duration::from_millis(300)), "0.3s");
        assert_eq!(seconds(Duration::from_millis(12_040)), "12.0s");
        assert_eq!(seconds(Duration::from_millis(123_400)), "2m03.4s");
        assert_eq!(bytes(340_100_000), "340.1 MB");
        assert_eq!(bytes(512), "512 B");
    }

    #[test]
    fn parallel_work_is_counted_once() {
        let p = Phase::default();
        let a = p.begin();
        let b = p.begin();
        std::thread::sleep(Duration::from_millis(50));
        a.done(10, 1);
        b.done(5, 1);
        let t = p.totals();
        assert_eq!((t.bytes, t.items), (15, 2));
        assert!(t.busy >= Duration::from_millis(50) && t.busy < Duration::from_millis(95));
    }

    #[test]
    fn slowest_three_first() {
        let step = |n, ms| StepTime {
            platform: String::new(),
            n,
            total: 5,
            text: format!("RUN {n}"),
            took: Duration::from_millis(ms),
            outcome: Outcome::Done,
        };
        let s: Vec<usize> = slowest(&[
            step(1, 5),
            step(2, 50),
            step(3, 1),
            step(4, 20),
            step(5, 50),
        ])
        .iter()
        .map(|s| s.n)
        .collect();
        assert_eq!(s, vec![2, 5, 4]);
    }
}
