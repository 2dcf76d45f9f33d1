//! BuildKit v0.21's results, recorded in the repository so the tests that
//! compare Kiln with BuildKit need no BuildKit: `testdata/references/SUITE/CASE.json`.
//!
//! `KILN_REFERENCES` chooses what a comparison does with its reference:
//! unset, it reads the recorded one; `write` builds the case with the BuildKit
//! `KILN_BUILDKIT` names and records the result; `check` builds it and fails
//! where the recording differs. `integration/refresh-references` runs the suites
//! so; it also lists every reference a run touched in `KILN_REFERENCES_LOG`,
//! so that references no case makes any more are found.
//!
//! A recording keeps only what the comparisons read, with what varies from build
//! to build made into placeholders: the loopback ports of the test servers, the
//! host's busybox binary (Debian's busybox-static, whatever its version), the
//! times (the image's `created`, history times, layer digests) and BuildKit's
//! random ref ids. A case lists the paths whose content may differ on its own
//! (`Image::of`'s `varies`).

use super::{Flat, Pulled};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a comparison does with its reference (`KILN_REFERENCES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read the recorded reference (the default; no BuildKit needed).
    Compare,
    /// Build with BuildKit and record the result.
    Write,
    /// Build with BuildKit and fail where the recording differs.
    Check,
}

pub fn mode() -> Mode {
    match std::env::var("KILN_REFERENCES").as_deref() {
        Err(_) | Ok("") => Mode::Compare,
        Ok("write") => Mode::Write,
        Ok("check") => Mode::Check,
        Ok(other) => panic!("KILN_REFERENCES={other}: want `write`, `check` or nothing"),
    }
}

/// BuildKit v0.21's `build CONTEXT DOCKERFILE IMAGE`: the `build` script of the
/// BuildKit directory `KILN_BUILDKIT` names (integration/refresh-references sets
/// it). Only a refresh or a check builds with BuildKit.
pub fn buildkit_command(ctx: &Path, dockerfile: &Path, image: &str) -> Command {
    let dir = std::env::var_os("KILN_BUILDKIT").unwrap_or_else(|| {
        panic!("KILN_BUILDKIT is not set: BuildKit builds only when references are refreshed or checked; run integration/refresh-references")
    });
    let tool = Path::new(&dir).join("build");
    assert!(
        tool.exists(),
        "KILN_BUILDKIT names no BuildKit v0.21: {} is missing",
        tool.display()
    );
    let mut cmd = Command::new(&tool);
    cmd.arg(ctx).arg(dockerfile).arg(image);
    cmd
}

fn file(suite: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/references")
        .join(suite)
        .join(format!("{case}.json"))
}

/// One recording: the case's inputs as the test states them (a recording made
/// from other inputs is stale) and BuildKit's result.
#[derive(Serialize, Deserialize)]
struct Recording<T> {
    buildkit: String,
    inputs: String,
    result: T,
}

const BUILDKIT: &str = "v0.21.0";

/// BuildKit's result for `suite`/`case`: recorded, or built by `build` and
/// recorded or checked (see [`mode`]). `inputs` describes the case (its
/// Dockerfile and flags); a recording of other inputs is refused as stale.
pub fn recorded<T>(suite: &str, case: &str, inputs: &str, build: impl FnOnce() -> T) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let path = file(suite, case);
    let read = || -> Option<Recording<T>> {
        let text = std::fs::read_to_string(&path).ok()?;
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not a recorded reference: {e}", path.display())),
        )
    };
    let mode = mode();
    if mode != Mode::Compare {
        if let Some(log) = std::env::var_os("KILN_REFERENCES_LOG") {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("open KILN_REFERENCES_LOG");
            // One write per line: the tests of a suite append at once.
            f.write_all(format!("{suite}/{case}.json\n").as_bytes())
                .expect("write KILN_REFERENCES_LOG");
        }
    }
    // What a refresh costs, case by case (shown with --nocapture).
    let build = || {
        let started = std::time::Instant::now();
        let result = build();
        eprintln!("{suite}/{case}: BuildKit took {:?}", started.elapsed());
        result
    };
    match mode {
        Mode::Compare => {
            let rec = read().unwrap_or_else(|| {
                panic!(
                    "{suite}/{case}: no recorded BuildKit result at {}; record it with integration/refresh-references",
                    path.display()
                )
            });
            assert_eq!(
                rec.inputs, inputs,
                "{suite}/{case}: the case changed since BuildKit's result was recorded; refresh it with integration/refresh-references"
            );
            rec.result
        }
        Mode::Write => {
            let result = build();
            let rec = Recording {
                buildkit: BUILDKIT.into(),
                inputs: inputs.into(),
                result,
            };
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir references");
            let value = serde_json::to_value(&rec).expect("reference to json");
            std::fs::write(&path, format!("{}\n", layout(&value, 0))).expect("write reference");
            rec.result
        }
        Mode::Check => {
            let result = build();
            let Some(rec) = read() else {
                panic!(
                    "{suite}/{case}: nothing recorded at {}; run integration/refresh-references",
                    path.display()
                )
            };
            let (old, new) = (
                serde_json::to_value(&rec).expect("json"),
                serde_json::to_value(&Recording {
                    buildkit: BUILDKIT.into(),
                    inputs: inputs.into(),
                    result: &result,
                })
                .expect("json"),
            );
            if old != new {
                let (old, new) = (layout(&old, 0), layout(&new, 0));
                let old_lines: BTreeSet<&str> = old.lines().collect();
                let new_lines: BTreeSet<&str> = new.lines().collect();
                let gone: Vec<&str> = old_lines.difference(&new_lines).copied().collect();
                let came: Vec<&str> = new_lines.difference(&old_lines).copied().collect();
                panic!(
                    "{suite}/{case}: BuildKit's result differs from {}:\nrecorded only:\n  {}\nbuilt only:\n  {}",
                    path.display(),
                    gone.join("\n  "),
                    came.join("\n  ")
                );
            }
            result
        }
    }
}

/// JSON as the references are written: a value whose one-line form is short
/// stays on one line (a file entry, a history entry), larger ones are spread
/// one member a line, so a refresh's diff shows what changed.
fn layout(v: &serde_json::Value, indent: usize) -> String {
    use serde_json::Value;
    let flat = serde_json::to_string(v).expect("json");
    if flat.len() <= 200 {
        return flat;
    }
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{pad}{}: {}",
                        serde_json::to_string(k).expect("json"),
                        layout(v, indent + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{end}}}", items.join(",\n"))
        }
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|v| format!("{pad}{}", layout(v, indent + 1)))
                .collect();
            format!("[\n{}\n{end}]", items.join(",\n"))
        }
        _ => flat,
    }
}

/// The values of one build that the next build does not share, each with the
/// placeholder a recording holds instead.
#[derive(Default)]
pub struct Placeholders {
    texts: Vec<(String, String)>,
    digests: Vec<(String, String)>,
}

impl Placeholders {
    /// `actual` (a server's address, a commit id) is written as `placeholder`.
    pub fn text(mut self, actual: &str, placeholder: &str) -> Self {
        self.texts.push((actual.into(), placeholder.into()));
        // The longest first: one address may hold another.
        self.texts.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        self
    }

    /// A file whose content is `bytes` is recorded by `placeholder`, not by its
    /// digest and size: a fixture taken from the host.
    pub fn content(mut self, bytes: &[u8], placeholder: &str) -> Self {
        self.digests
            .push((super::sha256_of(bytes), placeholder.into()));
        self
    }

    /// The host's busybox, which the busybox base images hold.
    pub fn busybox(self) -> Self {
        let bytes = std::fs::read(super::busybox()).expect("read busybox");
        self.content(&bytes, "{BUSYBOX}")
    }

    /// `s` with every actual value replaced, and BuildKit's random ids (25
    /// characters of base32, `ref ID::ID`) made `{ID}`.
    pub fn apply(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (actual, placeholder) in &self.texts {
            out = out.replace(actual.as_str(), placeholder);
        }
        random_ids(&out)
    }

    fn json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.apply(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.json(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (self.apply(k), self.json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// BuildKit names refs by identity.NewID: 25 characters of [a-z0-9].
fn random_ids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let id = word.len() == 25
            && word.bytes().any(|b| b.is_ascii_digit())
            && word.bytes().any(|b| b.is_ascii_lowercase());
        out.push_str(if id { "{ID}" } else { word });
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// An image as the comparisons read it: the flattened files, the config, and
/// each layer's entries (`name type mode uid:gid`, old times).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub files: BTreeMap<String, Flat>,
    pub raw_config: serde_json::Value,
    pub layers: Vec<Vec<String>>,
}

/// What a file whose content varies from build to build is recorded with.
pub const VARIES: &str = "{VARIES}";

impl Image {
    /// `pulled` as a recording keeps it: placeholders for what `ph` names; the
    /// times left out of the config (`created`, the history's, the layer digests
    /// that hold them); the layers before `first_layer` (a base that varies with
    /// the machine, such as a debootstrap'd Debian) and their files left out;
    /// the content of files under any of `varies` (a log, a cache) left out.
    pub fn of(pulled: &Pulled, ph: &Placeholders, first_layer: usize, varies: &[&str]) -> Image {
        let layers: Vec<Vec<String>> = pulled
            .layers
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                if i < first_layer {
                    Vec::new()
                } else {
                    rows.iter().map(|r| ph.apply(r)).collect()
                }
            })
            .collect();
        // A row is `NAME TYPE MODE UID:GID[ t=SECS]`.
        let named: BTreeSet<String> = pulled
            .layers
            .iter()
            .skip(first_layer)
            .flatten()
            .map(|row| {
                let fields = if row.contains(" t=") { 4 } else { 3 };
                let mut name = row.as_str();
                for _ in 0..fields {
                    name = name.rsplit_once(' ').map_or(name, |(n, _)| n);
                }
                name.to_string()
            })
            .collect();
        let files = pulled
            .files
            .iter()
            .filter(|(path, _)| first_layer == 0 || named.contains(*path))
            .map(|(path, f)| {
                let mut f = f.clone();
                let varying = varies
                    .iter()
                    .any(|v| path == v || (v.ends_with('/') && path.starts_with(v)));
                if let Some((_, p)) = ph.digests.iter().find(|(d, _)| *d == f.digest) {
                    (f.digest, f.size) = (p.clone(), 0);
                } else if varying && f.kind == 'f' {
                    (f.digest, f.size) = (VARIES.into(), 0);
                }
                f.link = ph.apply(&f.link);
                (ph.apply(path), f)
            })
            .collect();
        let mut config = ph.json(&pulled.raw_config);
        if let Some(c) = config.as_object_mut() {
            c.remove("created");
        }
        for h in config["history"].as_array_mut().into_iter().flatten() {
            if let Some(h) = h.as_object_mut() {
                h.remove("created");
            }
        }
        for d in config["rootfs"]["diff_ids"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            *d = "{DIFF_ID}".into();
        }
        Image {
            files,
            raw_config: config,
            layers,
        }
    }
}

/// What BuildKit's stderr says about a refusal, without its progress lines
/// (`#N …`, with times): from the Dockerfile excerpt on, or else its `error:`
/// lines.
pub fn refusal(stderr: &str, ph: &Placeholders) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("Dockerfile:"))
        .or_else(|| lines.iter().position(|l| l.starts_with("error:")))
        .unwrap_or(lines.len().saturating_sub(3));
    ph.apply(&lines[from..].join("\n"))
}
