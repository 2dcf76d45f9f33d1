//! Cache keys: sha256 over labelled inputs, computed before a step runs. The
//! inputs are kept so a miss can be explained (`--verbosity=debug`, cache config).

use sha2::{Digest, Sha256};

/// Bumped when what a key covers changes, so old entries stop matching.
const SCHEME: &str = "kiln-cache-v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    /// 64 lower-case hex digits: usable as a registry tag.
    pub hex: String,
    /// `label=value` lines the key was made of (file lists summarised by digest).
    pub inputs: Vec<String>,
}

pub(crate) struct KeyBuilder {
    h: Sha256,
    inputs: Vec<String>,
}

impl KeyBuilder {
    /// Starts a key from its parent (the previous step's key or the base's digest).
    pub fn new(parent: &str) -> KeyBuilder {
        let mut k = KeyBuilder {
            h: Sha256::new(),
            inputs: Vec::new(),
        };
        k.add("scheme", SCHEME);
        k.add("parent", parent);
        k
    }

    /// Adds one input; lengths are hashed too, so fields cannot run into each other.
    pub fn add(&mut self, label: &str, value: &str) -> &mut Self {
        for part in [label, value] {
            self.h.update((part.len() as u64).to_le_bytes());
            self.h.update(part.as_bytes());
        }
        self.inputs.push(format!("{label}={value}"));
        self
    }

    pub fn finish(self) -> CacheKey {
        CacheKey {
            hex: hex::encode(self.h.finalize()),
            inputs: self.inputs,
        }
    }
}

/// Hashes a list of files (path, mode, owner, content digest or link target) into
/// one digest; mtimes are deliberately left out.
#[derive(Default)]
pub(crate) struct SourceDigest {
    h: Sha256,
    count: u64,
}

impl SourceDigest {
    pub fn add(&mut self, path: &str, mode: u32, uid: u32, gid: u32, what: &str) {
        let line = format!("{path}\0{mode:o}\0{uid}:{gid}\0{what}\n");
        self.h.update(line.as_bytes());
        self.count += 1;
    }

    pub fn finish(self) -> String {
        format!(
            "sha256:{} ({} entries)",
            hex::encode(self.h.finalize()),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input() {
        let k = |parent: &str, a: &str, b: &str| {
            let mut k = KeyBuilder::new(parent);
            k.add(a, b);
            k.finish().hex
        };
        assert_eq!(k("p", "x", "y"), k("p", "x", "y"));
        assert_ne!(k("p", "x", "y"), k("q", "x", "y"));
        assert_ne!(
            k("p", "xy", ""),
            k("p", "x", "y"),
            "field boundaries are hashed"
        );
        assert_eq!(k("p", "x", "y").len(), 64);
    }
}
