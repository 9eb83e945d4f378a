//! Replays a fuzz target's inputs as an ordinary test: every file of
//! `fuzz/corpus/<target>/` (which must exist and hold something, else the
//! replay would pass without testing anything) and of
//! `fuzz/regressions/<target>/`, through the target's entry function,
//! naming the input that panics. Test support for the agent's and the
//! server's `fuzzing` modules (feature `corpus-replay`, enabled only by
//! their dev-dependencies); it does I/O and panics, unlike the rest of
//! this crate.

use std::path::{Path, PathBuf};

/// The inputs of `target` under `fuzz_dir`, sorted by path.
pub fn inputs(fuzz_dir: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_ne!(kind, "corpus", "{} is missing", dir.display());
            continue;
        };
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path();
            if path.is_file() {
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path, data));
            }
        }
    }
    assert!(
        out.iter().any(|(p, _)| p.to_string_lossy().contains("/corpus/")),
        "no seed inputs for {target}"
    );
    out.sort();
    out
}

/// Runs `f` on every input of `target`, panicking with the input's path if
/// `f` panics on it.
pub fn replay(fuzz_dir: &Path, target: &str, f: impl Fn(&[u8])) {
    for (path, data) in inputs(fuzz_dir, target) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&data)));
        assert!(run.is_ok(), "{target}: {} panicked", path.display());
    }
}
