//! The terminal view: a bar per layer downloaded, unpacked or uploaded (bytes,
//! percent, rate) and a running timer per step under way, drawn by indicatif
//! below the log. Off unless `main` starts it (stderr a terminal, or
//! `--progress=tty`); then every handle here is a no-op, so CI logs and files
//! never get a control sequence.
//!
//! A bottom-level service like `log`: the code that moves the bytes (registry,
//! layer reader, step bookkeeping) feeds it, and it calls nothing of Kiln's.
//! Process-wide, as stderr is: every line written to stderr goes through
//! [`write`] so that it lands above the bars, never glued to one.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static VIEW: OnceLock<View> = OnceLock::new();

/// Finished transfer bars of each kind kept on screen; older ones go, so a
/// big image's layers do not push the bars under way off a short terminal.
const KEEP_FINISHED: usize = 4;

struct View {
    multi: MultiProgress,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A command's line stands open (output without its newline): the bars
    /// are taken down until it ends, or they would be drawn after its text.
    paused: bool,
    /// The build is over: lines go straight to stderr.
    ended: bool,
    /// Something was drawn, so the last frame needs its line ended.
    drawn: bool,
    /// Step timers shown, at the top; transfer bars come after them.
    steps: usize,
    finished: VecDeque<(Kind, ProgressBar)>,
}

/// What a transfer bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Download,
    Unpack,
    Upload,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Download => "pull",
            Kind::Unpack => "unpack",
            Kind::Upload => "push",
        }
    }
}

/// Starts the terminal view when `on`; it ends (its last frame left on the
/// screen, its line ended) when the returned guard is dropped.
pub fn start(on: bool) -> Option<Ended> {
    if !on {
        return None;
    }
    // term_like draws even where stderr is no terminal (`--progress=tty`).
    let target = ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 10);
    let view = View {
        multi: MultiProgress::with_draw_target(target),
        state: Mutex::new(State::default()),
    };
    VIEW.set(view).ok().map(|_| Ended)
}

/// Ends the terminal view when dropped (see [`start`]).
pub struct Ended;

impl Drop for Ended {
    fn drop(&mut self) {
        let Some(v) = VIEW.get() else { return };
        let Ok(mut s) = v.state.lock() else { return };
        if s.ended {
            return;
        }
        s.ended = true;
        // The last frame stays; the cursor waits at its end for the next line.
        if s.drawn && !s.paused {
            let _ = std::io::stderr().write_all(b"\r\n");
        }
        v.multi.set_draw_target(ProgressDrawTarget::hidden());
    }
}

/// Writes `bytes` to stderr: above the bars when they are drawn, as lines of
/// their own. A piece that leaves its line open takes the bars down until a
/// later piece ends that line.
pub(crate) fn write(bytes: &[u8]) {
    let direct = |b: &[u8]| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b);
        let _ = err.flush();
    };
    let Some(v) = VIEW.get() else {
        return direct(bytes);
    };
    let Ok(mut s) = v.state.lock() else {
        return direct(bytes);
    };
    if s.ended || bytes.is_empty() {
        return direct(bytes);
    }
    let ends_line = bytes.ends_with(b"\n");
    if s.paused {
        direct(bytes);
        if ends_line {
            s.paused = false;
            v.multi.set_draw_target(draw_target());
        }
        return;
    }
    s.drawn = true;
    if ends_line {
        let text = String::from_utf8_lossy(&bytes[..bytes.len() - 1]);
        if v.multi.println(text).is_err() {
            direct(bytes);
        }
    } else {
        let _ = v.multi.clear();
        v.multi.set_draw_target(ProgressDrawTarget::hidden());
        s.paused = true;
        direct(bytes);
    }
}

fn draw_target() -> ProgressDrawTarget {
    ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 10)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // BuildKit prints durations as 12.4s.
        .with_key(
            "secs",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
            },
        )
        .progress_chars("=> ")
}

const BAR: &str = "{prefix:20} [{wide_bar}] {percent:>3}% {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}";
const FINISHED: &str = "{prefix:20} [{wide_bar}] {percent:>3}% {decimal_total_bytes} in {secs}";
const STEP: &str = "{spinner} {wide_msg} {secs}";

/// One layer's bytes moving: a bar on the terminal view, nothing without it.
/// Dropped without [`Bar::done`] (an error), it goes from the screen.
pub(crate) struct Bar {
    pb: Option<ProgressBar>,
    kind: Kind,
}

/// A bar for `total` bytes of `label` (a digest: shown short).
pub(crate) fn bar(kind: Kind, label: &str, total: u64) -> Bar {
    let none = Bar { pb: None, kind };
    let Some(v) = VIEW.get() else {
        return none;
    };
    let Ok(mut s) = v.state.lock() else {
        return none;
    };
    if s.ended {
        return none;
    }
    s.drawn = true;
    let short = label.strip_prefix("sha256:").unwrap_or(label);
    let short: String = short.chars().take(12).collect();
    let pb = ProgressBar::new(total)
        .with_style(style(BAR))
        .with_prefix(format!("{} {short}", kind.word()));
    Bar {
        pb: Some(v.multi.add(pb)),
        kind,
    }
}

impl Bar {
    /// A bar that draws nothing.
    pub(crate) fn none() -> Bar {
        Bar {
            pb: None,
            kind: Kind::Unpack,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        if let Some(pb) = &self.pb {
            pb.inc(n);
        }
    }

    /// A retry starts the count again.
    pub(crate) fn restart(&self) {
        if let Some(pb) = &self.pb {
            pb.reset();
        }
    }

    /// The layer is through: its bar full, kept on screen for a while.
    pub(crate) fn done(mut self) {
        let Some(pb) = self.pb.take() else { return };
        pb.set_style(style(FINISHED));
        if let Some(len) = pb.length() {
            pb.set_position(len);
        }
        pb.finish();
        let Some(v) = VIEW.get() else { return };
        let Ok(mut s) = v.state.lock() else { return };
        s.finished.push_back((self.kind, pb));
        let kind = self.kind;
        if s.finished.iter().filter(|(k, _)| *k == kind).count() > KEEP_FINISHED {
            if let Some(i) = s.finished.iter().position(|(k, _)| *k == kind) {
                if let Some((_, old)) = s.finished.remove(i) {
                    v.multi.remove(&old);
                }
            }
        }
    }

    /// A handle that only counts, for code that outlives a borrow (a
    /// request body's stream); the bar stays this value's.
    pub(crate) fn counter(&self) -> Counter {
        Counter(self.pb.clone())
    }

    /// `r` read through this bar: every byte read counts.
    pub(crate) fn reading<R: Read>(&self, r: R) -> Counted<R> {
        Counted {
            inner: r,
            counter: self.counter(),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let (Some(pb), Some(v)) = (self.pb.take(), VIEW.get()) {
            pb.finish_and_clear();
            v.multi.remove(&pb);
        }
    }
}

/// Counts bytes on a [`Bar`] without owning it.
#[derive(Clone)]
pub(crate) struct Counter(Option<ProgressBar>);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }
}

/// A reader whose bytes count on a [`Bar`].
pub(crate) struct Counted<R> {
    inner: R,
    counter: Counter,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.add(n as u64);
        Ok(n)
    }
}

/// A step under way: a line with its number, instruction and running time,
/// gone when dropped (the step's end line says the rest).
#[derive(Debug)]
pub(crate) struct StepTimer(Option<ProgressBar>);

/// A timer for the step `label` (`[n/total] INSTRUCTION`).
pub(crate) fn step(label: &str) -> StepTimer {
    let Some(v) = VIEW.get() else {
        return StepTimer(None);
    };
    let Ok(mut s) = v.state.lock() else {
        return StepTimer(None);
    };
    if s.ended {
        return StepTimer(None);
    }
    s.drawn = true;
    let pb = ProgressBar::new_spinner()
        .with_style(style(STEP))
        .with_message(label.to_string());
    let pb = v.multi.insert(s.steps, pb);
    s.steps += 1;
    pb.enable_steady_tick(Duration::from_millis(100));
    StepTimer(Some(pb))
}

impl Drop for StepTimer {
    fn drop(&mut self) {
        let (Some(pb), Some(v)) = (self.0.take(), VIEW.get()) else {
            return;
        };
        pb.finish_and_clear();
        v.multi.remove(&pb);
        if let Ok(mut s) = v.state.lock() {
            s.steps = s.steps.saturating_sub(1);
        }
    }
}
