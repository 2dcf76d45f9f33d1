//! Replays the fuzz corpora and regression inputs on stable Rust (CI has no
//! nightly), plus deterministic mutations of BuildKit's conformance data, through
//! the same properties the `cargo fuzz` targets check (`kiln::fuzzcheck`).

mod common;

use common::Noise;
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mutate(seed: &[u8], rng: &mut Noise) -> Vec<u8> {
    const SPECIAL: &[u8] = b"$`\\{}:-+?#%/\"'[]\n\r\t =<";
    let mut v = seed.to_vec();
    for _ in 0..(1 + rng.next_u64() % 8) {
        let at = if v.is_empty() {
            0
        } else {
            (rng.next_u64() as usize) % v.len()
        };
        let ch = SPECIAL[(rng.next_u64() as usize) % SPECIAL.len()];
        match rng.next_u64() % 3 {
            0 if !v.is_empty() => v[at] = ch,
            1 => v.insert(at, ch),
            _ if !v.is_empty() => {
                v.remove(at);
            }
            _ => v.push(ch),
        }
    }
    v
}

#[test]
fn layer_corpus_and_regressions() {
    let mut inputs = files(&root().join("fuzz/corpus/layer_apply"));
    inputs.extend(files(&root().join("fuzz/regressions/layer_apply")));
    assert!(inputs.len() >= 3, "the committed layer corpus is missing");
    for p in &inputs {
        let data = std::fs::read(p).unwrap();
        kiln::fuzzcheck::layer_apply(&data);
        let mut rng = Noise(data.len() as u64 | 1);
        for _ in 0..20 {
            kiln::fuzzcheck::layer_apply(&mutate(&data, &mut rng));
        }
    }
}

#[test]
fn dockerfile_mutations() {
    let conf = root().join("testdata/conformance/buildkit");
    let mut seeds: Vec<PathBuf> = files(&conf.join("testfiles")).into_iter().collect();
    for d in std::fs::read_dir(conf.join("testfiles"))
        .unwrap()
        .chain(std::fs::read_dir(conf.join("testfiles-negative")).unwrap())
    {
        seeds.push(d.unwrap().path().join("Dockerfile"));
    }
    seeds.extend(files(&root().join("fuzz/regressions/dockerfile")));
    let mut rng = Noise(0x2545f4914f6cdd1d);
    let mut ran = 0;
    for p in seeds.iter().filter(|p| p.is_file()) {
        let data = std::fs::read(p).unwrap();
        kiln::fuzzcheck::dockerfile(&data);
        for _ in 0..200 {
            kiln::fuzzcheck::dockerfile(&mutate(&data, &mut rng));
            ran += 1;
        }
    }
    assert!(ran > 5000, "{ran}");
}

#[test]
fn expansion_mutations() {
    let text =
        std::fs::read_to_string(root().join("testdata/conformance/buildkit/shell/envVarTest"))
            .unwrap();
    let mut rng = Noise(0x9e3779b97f4a7c15);
    let mut seeds: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('|').nth(1))
        .map(|w| w.trim().as_bytes().to_vec())
        .collect();
    seeds.extend(
        files(&root().join("fuzz/regressions/expand"))
            .iter()
            .map(|p| std::fs::read(p).unwrap()),
    );
    for s in &seeds {
        kiln::fuzzcheck::expand(s);
        for _ in 0..100 {
            kiln::fuzzcheck::expand(&mutate(s, &mut rng));
        }
    }
}
