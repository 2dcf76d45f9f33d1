//! Properties checked on arbitrary input, shared by the `cargo fuzz` targets
//! (`fuzz/`) and the stable replay test that runs their corpus in CI. Each
//! function panics when a property does not hold.

use crate::dockerfile::shell::{self, Env};
use crate::dockerfile::{parse_dockerfile, Instruction};
use crate::rootfs::apply::ScratchRoot;
use crate::rootfs::index::FsIndex;

/// Any text: parsing, then expanding every word, never panics.
pub fn dockerfile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(df) = parse_dockerfile(&text) else {
        return;
    };
    let env: Env = [
        ("A".to_string(), "1".to_string()),
        ("EMPTY".to_string(), String::new()),
    ]
    .into();
    for stage in &df.stages {
        let _ = shell::process(&stage.image, df.escape, &env);
        for step in &stage.steps {
            let words: Vec<&str> = match &step.instruction {
                Instruction::Copy(c) => c
                    .sources
                    .iter()
                    .chain([&c.dest])
                    .map(String::as_str)
                    .collect(),
                Instruction::Env(p) | Instruction::Label(p) => p
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                    .collect(),
                Instruction::Workdir(w) | Instruction::User(w) | Instruction::StopSignal(w) => {
                    vec![w.as_str()]
                }
                Instruction::Expose(v) | Instruction::Volume(v) => {
                    v.iter().map(String::as_str).collect()
                }
                _ => Vec::new(),
            };
            for w in words {
                let _ = shell::process(w, df.escape, &env);
            }
        }
    }
}

/// Any word, either escape character: expansion never panics nor yields empty words.
pub fn expand(data: &[u8]) {
    let word = String::from_utf8_lossy(data);
    let env: Env = [
        ("PWD".to_string(), "/home".to_string()),
        ("NULL".to_string(), String::new()),
    ]
    .into();
    for esc in ['\\', '`'] {
        if let Ok(r) = shell::process(&word, esc, &env) {
            assert!(
                r.words.iter().all(|w| !w.is_empty()),
                "empty word from {word:?}"
            );
        }
    }
}

/// Any bytes as a layer, and as an archive ADD unpacks: unpacking and
/// indexing never panic, and nothing is written beside the roots (a sentinel
/// directory there stays empty).
pub fn layer_apply(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let unpacked = dir.path().join("unpacked");
    let sentinel = dir.path().join("sentinel");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&unpacked).expect("unpacked");
    std::fs::create_dir(&sentinel).expect("sentinel");
    let blob = dir.path().join("layer");
    std::fs::write(&blob, data).expect("blob");
    let _ = ScratchRoot::unprivileged(&root).apply_layer(&blob, "fuzz");
    let _ = FsIndex::default().with_root().apply_layer(&blob, "fuzz");
    let _ = ScratchRoot::unprivileged(&unpacked).unpack_archive(&blob, "fuzz", 0);
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        beside.len(),
        4,
        "only the roots, sentinel and the blob: {beside:?}"
    );
    assert_eq!(
        std::fs::read_dir(&sentinel).expect("sentinel").count(),
        0,
        "sentinel untouched"
    );
}
