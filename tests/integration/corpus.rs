//! The fuzz corpus and every input that once crashed a parser
//! (`fuzz/regressions/TARGET/`), replayed through the parsers of
//! `provision::fuzz` on every test run: what the fuzzer found stays fixed.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_corpus_input_and_past_crash_parses_without_a_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut panics = Vec::new();
    for target in provision::fuzz::TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(target.name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{} is empty: run scripts/fuzz",
            target.name
        );
        let regressions = inputs(&fuzz.join("regressions").join(target.name));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| (target.run)(&data)).is_err() {
                panics.push(file.display().to_string());
            }
        }
    }
    assert!(
        panics.is_empty(),
        "parsers panicked on:\n{}",
        panics.join("\n")
    );
}
