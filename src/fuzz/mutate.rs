//! The in-suite fuzzing run: a small deterministic mutator over a target's seed corpus, bounded by
//! time and by count, for `tests/fuzz_smoke.rs`. No coverage feedback (that is libFuzzer's job in
//! `fuzz/`); its purpose is to catch a decoder regression in CI within seconds, on stable Rust.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Target;

/// A deterministic byte-string mutator (xorshift64*): the same seed gives the same inputs, so a
/// failure in CI reproduces locally.
pub struct Mutator {
    state: u64,
    dictionary: Vec<Vec<u8>>,
}

impl Mutator {
    /// A mutator seeded with `seed`, inserting tokens from `dictionary` now and then.
    pub fn new(seed: u64, dictionary: Vec<Vec<u8>>) -> Mutator {
        Mutator { state: seed | 1, dictionary }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// One to four mutations of `input` (bit flips, interesting bytes, inserts, deletes, repeats,
    /// dictionary tokens, splices with `other`), at most `max_len` bytes long.
    pub fn mutate(&mut self, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
        let mut data = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len() + 1);
            match self.below(9) {
                0 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] ^= 1 << self.below(8);
                }
                1 if !data.is_empty() => {
                    const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff;=,. \t\"\\%/@_-0129{}[]:\n";
                    let i = self.below(data.len());
                    data[i] = INTERESTING[self.below(INTERESTING.len())];
                }
                2 => {
                    let byte = self.next() as u8;
                    data.insert(at, byte);
                }
                3 if !data.is_empty() => {
                    let end = (at + 1 + self.below(16)).min(data.len());
                    data.drain(at.min(end)..end);
                }
                4 if !data.is_empty() => {
                    let start = self.below(data.len());
                    let end = (start + 1 + self.below(32)).min(data.len());
                    let piece = data[start..end].to_vec();
                    for _ in 0..1 + self.below(4) {
                        data.splice(at..at, piece.iter().copied());
                    }
                }
                5 | 6 if !self.dictionary.is_empty() => {
                    let pick = self.below(self.dictionary.len());
                    let token = self.dictionary[pick].clone();
                    data.splice(at..at, token);
                }
                7 if !other.is_empty() => {
                    let start = self.below(other.len());
                    let end = (start + 1 + self.below(64)).min(other.len());
                    data.splice(at..at, other[start..end].iter().copied());
                }
                _ => {
                    let len = self.below(data.len() + 1);
                    data.truncate(len);
                }
            }
        }
        data.truncate(max_len);
        data
    }
}

/// What one bounded run did.
#[derive(Clone, Debug, Default)]
pub struct SmokeRun {
    /// Seed files run as they are.
    pub seeds: usize,
    /// Mutated inputs run after them.
    pub mutations: usize,
}

/// Runs `target` over every file of `corpus` (its seed corpus), then over mutations of them until
/// `budget` has passed or `max_mutations` were run. Panics (with the input, escaped) on a finding.
pub fn smoke(target: Target, corpus: &Path, dictionary: &Path, budget: Duration, max_mutations: usize) -> SmokeRun {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| {
            let bytes = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{}: no seeds", corpus.display());
    let started = Instant::now();
    for (name, bytes) in &seeds {
        run_one(target, bytes, &format!("seed {name}"));
    }

    let dictionary = std::fs::read_to_string(dictionary).map(|text| parse_dictionary(&text)).unwrap_or_default();
    let mut mutator = Mutator::new(0x7472_6f75_7373_6561 ^ target.name.len() as u64, dictionary);
    let mut run = SmokeRun { seeds: seeds.len(), mutations: 0 };
    // Small inputs mutate fast; the bound keeps a 1 MB seed from turning into many.
    let max_len = seeds.iter().map(|(_, b)| b.len()).max().unwrap_or(0).clamp(4096, 64 * 1024);
    let mut current = seeds[0].1.clone();
    while run.mutations < max_mutations && started.elapsed() < budget {
        // Mostly keep mutating the last input (deeper changes), sometimes restart from a seed.
        if run.mutations.is_multiple_of(8) {
            current = seeds[mutator.below(seeds.len())].1.clone();
        }
        let other = &seeds[mutator.below(seeds.len())].1;
        current = mutator.mutate(&current, other, max_len);
        run_one(target, &current, "mutation");
        run.mutations += 1;
    }
    run
}

fn run_one(target: Target, input: &[u8], what: &str) {
    let outcome = std::panic::catch_unwind(|| (target.run)(input));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let shown: String = input.iter().take(2048).flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
        panic!("fuzz target {} failed on a {what}: {message}\ninput ({} bytes): b\"{shown}\"", target.name, input.len());
    }
}

/// The tokens of a libFuzzer dictionary (`name="value"` or `"value"` per line, `\xNN`, `\\`, `\"`
/// escapes; `#` comments).
pub fn parse_dictionary(text: &str) -> Vec<Vec<u8>> {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (Some(start), Some(end)) = (line.find('"'), line.rfind('"')) else { continue };
        if end <= start {
            continue;
        }
        let mut token = Vec::new();
        let mut bytes = line[start + 1..end].bytes();
        while let Some(b) = bytes.next() {
            if b != b'\\' {
                token.push(b);
                continue;
            }
            match bytes.next() {
                Some(b'x') => {
                    let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                    if let Some(v) = std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        token.push(v);
                    }
                }
                Some(other) => token.push(other),
                None => {}
            }
        }
        tokens.push(token);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_parse_like_libfuzzer_reads_them() {
        let tokens = parse_dictionary("# comment\nkw1=\"a=b\"\n\"\\x00\\xff\"\n\"say \\\"hi\\\" \\\\\"\n\nbad\n");
        assert_eq!(tokens, vec![b"a=b".to_vec(), vec![0, 255], b"say \"hi\" \\".to_vec()]);
    }

    #[test]
    fn the_mutator_is_deterministic_and_bounded() {
        let run = |seed| {
            let mut m = Mutator::new(seed, vec![b"@S@".to_vec()]);
            (0..200).map(|_| m.mutate(b"name=value; other=1", b"xyz", 64)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().all(|input| input.len() <= 64));
    }
}
