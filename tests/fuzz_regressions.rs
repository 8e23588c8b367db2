//! Replays every kept fuzz input without libFuzzer: the seeds under
//! `fuzz/corpus/TARGET/` and every crash ever found, kept under
//! `fuzz/regressions/TARGET/` once fixed. A panic here is a regression.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[test]
fn every_kept_fuzz_input_runs_clean() {
    let root = common::root().join("fuzz");
    let mut replayed = 0;
    for (name, target) in kiln::fuzzing::TARGETS {
        let mut seeds = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
                seeds += 1;
            }
        }
        assert!(seeds > 0, "no kept inputs for fuzz target {name}");
        replayed += seeds;
    }
    eprintln!("replayed {replayed} fuzz inputs");
}
