//! The terminal view (issue 33): per-layer bars and step timers on a terminal,
//! RUN output above them on lines of its own, and nothing of it where stderr
//! is a file or `--progress=plain` says so. A terminal is `script`'s pseudo-
//! terminal; what it shows is read back through a terminal emulator (vt100).

mod common;

use common::*;

/// Rows and columns of the pseudo-terminal: tall enough that nothing
/// scrolls away, so the emulator's screen holds the whole session.
const ROWS: u16 = 1000;
const COLS: u16 = 120;

/// A COPY of a few megabytes (an upload bar with a while to run) and one
/// RUN that prints lines, quiet for a second first so the bars are drawn
/// when they come, and leaves one line open for a while.
fn context(reg: &TestRegistry) -> tempfile::TempDir {
    push_busybox_base(reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let big = Noise::bytes(4242, 4_000_000);
    std::fs::write(ctx.path().join("big.bin"), big).unwrap();
    let df = format!(
        "FROM {}/base:1\nCOPY big.bin /big.bin\nRUN sleep 1; for i in 1 2 3 4 5 6; do echo run-line-$i; sleep 0.2; done; printf open-; sleep 0.5; echo line\n",
        reg.host
    );
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    ctx
}

fn executor_cmd(ctx: &std::path::Path, dest: &str) -> String {
    format!(
        "{} --context {} --destination {dest}",
        env!("CARGO_BIN_EXE_executor"),
        ctx.display()
    )
}

/// Runs `cmd` in a pseudo-terminal of ROWS×COLS; returns what it wrote there.
fn on_a_terminal(cmd: &str) -> (bool, Vec<u8>) {
    let script = require("script", "apt-get install bsdutils (util-linux's `script`)");
    let out = std::process::Command::new(script)
        .args([
            "-q",
            "-f",
            "-e",
            "-c",
            &format!("stty rows {ROWS} cols {COLS}; {cmd}"),
            "/dev/null",
        ])
        .output()
        .unwrap();
    (out.status.success(), out.stdout)
}

/// The lines a terminal shows after `raw`, trailing blanks cut.
fn screen(raw: &[u8]) -> Vec<String> {
    let size = |n| std::num::NonZeroU16::new(n).expect("a size");
    let mut term = vt100::Parser::new(size(ROWS), size(COLS), 0);
    term.process(raw);
    term.screen()
        .rows(0, COLS)
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// A bar line of the terminal view: `pull|unpack|push <digest> [===] 100% …`.
fn is_bar(line: &str) -> bool {
    ["pull ", "unpack ", "push "]
        .iter()
        .any(|k| line.starts_with(k))
        && line.contains('[')
        && line.contains('%')
}

fn run_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("run-line-") || l.contains("open-"))
        .filter(|l| !l.contains("RUN ") && !l.contains("printf"))
        .collect()
}

fn wanted_run_lines() -> Vec<String> {
    let mut want: Vec<String> = (1..=6).map(|i| format!("run-line-{i}")).collect();
    want.push("open-line".into());
    want
}

/// On a terminal: the RUN's lines stand whole on lines of their own while the
/// bars are drawn, log lines start their lines, the step under way has a
/// running timer, and the last frame shows every bar (pull, unpack, push) at
/// 100%. With stderr in a file, the same build writes no control sequence.
#[test]
fn terminal_view_keeps_run_lines_whole_and_ends_with_full_bars() {
    let reg = TestRegistry::start();
    let ctx = context(&reg);
    let (ok, raw) = on_a_terminal(&executor_cmd(ctx.path(), &format!("{}/tty:1", reg.host)));
    let text = String::from_utf8_lossy(&raw);
    assert!(ok, "{text}");
    let shown = screen(&raw);
    let all = shown.join("\n");
    let want = wanted_run_lines();
    assert_eq!(
        run_lines(&shown),
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "each of the command's lines intact on a line of its own:\n{all}"
    );
    assert!(
        shown
            .iter()
            .filter(|l| l.contains("INFO"))
            .all(|l| l.starts_with("INFO")),
        "log lines start their lines:\n{all}"
    );
    // The RUN step's timer was drawn while it ran: its label beyond the
    // step's own log line, with a time in seconds.
    assert!(
        text.matches("[3/3] RUN sleep 1; for i in").count() > 1,
        "a running timer on the step: {text}"
    );
    // The last frame: the bars left on screen, below the summary.
    let summary = shown
        .iter()
        .rposition(|l| l.starts_with("INFO slowest steps"))
        .unwrap_or_else(|| panic!("the summary:\n{all}"));
    let frame: Vec<&String> = shown[summary + 1..]
        .iter()
        .filter(|l| !l.is_empty())
        .collect();
    let bars: Vec<&&String> = frame.iter().filter(|l| is_bar(l)).collect();
    for kind in ["pull ", "unpack ", "push "] {
        assert!(
            bars.iter().any(|l| l.starts_with(kind)),
            "a {kind}bar in the last frame:\n{all}"
        );
    }
    assert!(
        bars.iter()
            .all(|l| l.contains("100%") && l.contains("[===")),
        "every bar of the last frame complete:\n{all}"
    );
    // Bars never hold a command's line, nor a log line.
    assert!(
        !shown
            .iter()
            .any(|l| is_bar(l) && (l.contains("run-line-") || l.contains("INFO"))),
        "{all}"
    );

    // stderr in a file (stdout still the terminal): plain lines only.
    let log = ctx.path().join("log.txt");
    let (ok, _) = on_a_terminal(&format!(
        "{} 2>{}",
        executor_cmd(ctx.path(), &format!("{}/tty:2", reg.host)),
        log.display()
    ));
    let text = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(ok, "{text}");
    assert!(
        !text.contains('\x1b') && !text.contains('\r') && !text.contains("100%"),
        "no trace of the terminal view in a file: {text:?}"
    );
    for want in &want {
        assert!(
            text.contains(&format!("\n{want}\n")),
            "{want} on its own line: {text}"
        );
    }
}

/// BuildKit's `--progress`: `tty` draws the view into a pipe too (bars to
/// 100%), `plain` never draws it, even on a terminal.
#[test]
fn progress_flag_chooses_the_terminal_view() {
    let reg = TestRegistry::start();
    let ctx = context(&reg);
    let tty = build_with(
        ctx.path(),
        &format!("{}/mode:1", reg.host),
        &["--progress=tty"],
    );
    assert_ok(&tty);
    let err = String::from_utf8_lossy(&tty.stderr);
    assert!(
        err.contains('\x1b') && err.contains("100%") && err.contains("push "),
        "--progress=tty into a pipe: {err}"
    );
    let (ok, raw) = on_a_terminal(&format!(
        "{} --progress=plain",
        executor_cmd(ctx.path(), &format!("{}/mode:2", reg.host))
    ));
    let text = String::from_utf8_lossy(&raw);
    assert!(ok, "{text}");
    let shown = screen(&raw);
    assert!(
        !shown.iter().any(|l| is_bar(l)) && !text.contains("100%"),
        "--progress=plain on a terminal: {text}"
    );
    assert_eq!(
        run_lines(&shown),
        wanted_run_lines()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "{text}"
    );
}
