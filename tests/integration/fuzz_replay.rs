//! Replays the fuzz corpus (fuzz/corpus/volume) and a batch of random
//! inputs through the fuzz harness, so CI exercises it without nightly.

#[path = "../../fuzz/harness.rs"]
mod harness;

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/volume");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        harness::run(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    println!("replayed {count} corpus inputs");
    assert!(count > 0, "the corpus at {} is empty", dir.display());
}

#[test]
fn random_volumes_are_read_safely() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..300 {
        let len = rng.usize(0..512);
        let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        harness::run(&data);
    }
}
