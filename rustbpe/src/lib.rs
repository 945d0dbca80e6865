//! rustbpe: a fast byte-level BPE trainer for nanochat, exposed to Python with pyo3.
//!
//! Training only: nanochat/tokenizer.py hands the learned ranks to tiktoken for fast encoding.
//!
//!     import rustbpe
//!     tok = rustbpe.Tokenizer()
//!     tok.train_from_iterator(iter_of_str, vocab_size=65536)   # streams, GIL released while working
//!     tok.get_pattern()            # the split regex used
//!     tok.get_mergeable_ranks()    # [(bytes, rank)]: ranks 0..255 = single bytes, then the merges in order
//!     tok.encode("hello world")    # reference encoder (slow; for tests)
//!
//! Build (from the repo root): `source scripts/cargo_source.sh && pip install -e .`
//! Rust unit tests: `cargo test --release` (see scripts/cargo_source.sh for the offline setup).
//!
//! Pipeline of `train_from_iterator`:
//!   1. pull `buffer_size` strings from the Python iterator (holding the GIL),
//!   2. release the GIL; split them into chunks with the pattern, in parallel (rayon), and count the
//!      unique chunks into per-thread hash maps (pretok.rs, count.rs),
//!   3. repeat until the iterator is exhausted, then merge the per-thread counts,
//!   4. learn the merges with a lazy max-heap and incremental pair counts (train.rs).

mod count;
mod encode;
mod pretok;
mod train;

use ahash::AHashMap;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyString};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use count::ChunkCounts;
pub use pretok::{Splitter, DEFAULT_PATTERN};
pub use train::learn_merges;

/// Below this vocabulary size training is quiet (tests train tiny vocabularies); above it progress
/// lines go to stderr: reading progress, then every 10% of the merges with the elapsed time.
const VERBOSE_MIN_VOCAB: i64 = 4096;
/// Token ids are u32; far beyond any useful vocabulary, but it keeps allocations bounded.
const MAX_VOCAB: i64 = 1 << 31;

// -----------------------------------------------------------------------------
// the Python class

#[pyclass(module = "rustbpe")]
pub struct Tokenizer {
    pattern: String,
    splitter: Splitter,
    /// merges[k] = (left, right) creates token 256 + k
    merges: Vec<(u32, u32)>,
    /// bytes of every token id, and the inverse map (unique by construction, see train.rs)
    token_bytes: Vec<Vec<u8>>,
    ranks: AHashMap<Vec<u8>, u32>,
}

impl Tokenizer {
    fn set_merges(&mut self, merges: Vec<(u32, u32)>) {
        let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for &(a, b) in &merges {
            let mut bytes = token_bytes[a as usize].clone();
            bytes.extend_from_slice(&token_bytes[b as usize]);
            token_bytes.push(bytes);
        }
        self.ranks = token_bytes.iter().enumerate().map(|(i, b)| (b.clone(), i as u32)).collect();
        self.token_bytes = token_bytes;
        self.merges = merges;
    }
}

fn value_error(msg: String) -> PyErr {
    PyValueError::new_err(msg)
}

#[pymethods]
impl Tokenizer {
    /// An untrained tokenizer: the default pattern and the 256 byte tokens.
    #[new]
    fn new() -> Self {
        let mut tok = Tokenizer {
            pattern: DEFAULT_PATTERN.to_string(),
            splitter: Splitter::new(DEFAULT_PATTERN, false).expect("default pattern compiles"),
            merges: Vec::new(),
            token_bytes: Vec::new(),
            ranks: AHashMap::new(),
        };
        tok.set_merges(Vec::new());
        tok
    }

    /// train_from_iterator(iterator, vocab_size, buffer_size=8192, pattern=None)
    /// --
    ///
    /// Learn vocab_size - 256 merges from an iterator of str (documents). pattern=None uses the default
    /// GPT-4-style split pattern. Stops early (fewer ranks) if the text runs out of pairs to merge.
    #[args(buffer_size = "8192", pattern = "None")]
    #[pyo3(text_signature = "($self, iterator, vocab_size, buffer_size=8192, pattern=None)")]
    fn train_from_iterator(
        &mut self,
        py: Python<'_>,
        iterator: &PyAny,
        vocab_size: i64,
        buffer_size: i64,
        pattern: Option<String>,
    ) -> PyResult<()> {
        // --- validate the arguments before touching the iterator
        if vocab_size < 256 {
            return Err(value_error(format!(
                "vocab_size must be at least 256 (one token per byte), got {vocab_size}; pass a larger vocab_size"
            )));
        }
        if vocab_size > MAX_VOCAB {
            return Err(value_error(format!(
                "vocab_size {vocab_size} is too large (token ids are u32; at most {MAX_VOCAB}); pass a smaller vocab_size"
            )));
        }
        if buffer_size < 1 {
            return Err(value_error(format!("buffer_size must be at least 1, got {buffer_size}")));
        }
        let pattern = pattern.unwrap_or_else(|| DEFAULT_PATTERN.to_string());
        let splitter = Splitter::new(&pattern, false)
            .map_err(|e| value_error(format!("invalid split pattern {pattern:?}: {e}")))?;
        let verbose = vocab_size >= VERBOSE_MIN_VOCAB;
        let mut iter = PyIterator::from_object(py, iterator)?;

        // --- stream: fill a buffer under the GIL, count its chunks with the GIL released
        let t0 = Instant::now();
        let mut last_log = Instant::now();
        let counts = ChunkCounts::new();
        let (mut n_docs, mut n_bytes) = (0usize, 0usize);
        let mut exhausted = false;
        while !exhausted {
            // A fresh pool per buffer: pyo3 0.17 keeps every object the iterator yields alive until its
            // pool is dropped, so without this the whole corpus would stay in memory until we return.
            // SAFETY: nothing borrowed from this pool (items, their &str) outlives this loop iteration.
            let pool = unsafe { py.new_pool() };
            let py = pool.python();
            let mut texts: Vec<&str> = Vec::with_capacity((buffer_size as usize).min(1 << 16));
            while texts.len() < buffer_size as usize {
                let item = match iter.next() {
                    None => {
                        exhausted = true;
                        break;
                    }
                    Some(item) => item?, // an exception raised by the iterator propagates as is
                };
                let text = item.downcast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "train_from_iterator expects an iterator of str, got an item of type {}; \
                         decode bytes or convert items with str() first",
                        item.get_type().name().unwrap_or("?")
                    ))
                })?;
                texts.push(text.to_str()?);
            }
            n_docs += texts.len();
            n_bytes += texts.iter().map(|t| t.len()).sum::<usize>();
            // &str into the UTF-8 buffers of immutable Python strings, kept alive by the pool: safe to read
            // from other threads while the GIL is released.
            py.allow_threads(|| counts.add_texts(&splitter, &texts))
                .map_err(|e| value_error(format!("splitting text with pattern {pattern:?} failed: {e}")))?;
            py.check_signals()?; // let Ctrl-C through between buffers
            drop(texts);
            drop(pool);
            if verbose && last_log.elapsed().as_secs_f64() > 5.0 {
                eprintln!(
                    "rustbpe: read {n_docs} docs, {:.1} MB, elapsed {:.1}s",
                    n_bytes as f64 / 1e6,
                    t0.elapsed().as_secs_f64()
                );
                last_log = Instant::now();
            }
        }
        if verbose {
            eprintln!(
                "rustbpe: read {n_docs} docs, {:.1} MB in {:.1}s; learning merges",
                n_bytes as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            );
        }

        // --- learn the merges (GIL released)
        let num_merges = (vocab_size - 256) as usize;
        let merges = py.allow_threads(|| {
            let (words, wcounts) = counts.into_words();
            learn_merges(words, wcounts, num_merges, verbose)
        });
        if verbose {
            eprintln!(
                "rustbpe: done, {} merges (vocab {}) in {:.1}s",
                merges.len(),
                merges.len() + 256,
                t0.elapsed().as_secs_f64()
            );
        }
        self.set_merges(merges);
        self.pattern = pattern;
        self.splitter = splitter;
        Ok(())
    }

    /// The split pattern (regex) the tokenizer was trained with.
    fn get_pattern(&self) -> String {
        self.pattern.clone()
    }

    /// [(token bytes, rank)] for every token: ranks 0..255 are the single bytes in byte order, then one
    /// per merge in the order learned. Feed it to tiktoken as mergeable_ranks.
    fn get_mergeable_ranks<'py>(&self, py: Python<'py>) -> Vec<(&'py PyBytes, u32)> {
        self.token_bytes.iter().enumerate().map(|(i, b)| (PyBytes::new(py, b), i as u32)).collect()
    }

    /// The merges as [(left_id, right_id)]; merge k created token 256 + k.
    fn get_merges(&self) -> Vec<(u32, u32)> {
        self.merges.clone()
    }

    /// Reference encoder (slow, plain; tiktoken is the fast path): split with the pattern, then greedy BPE.
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        py.allow_threads(|| {
            let mut out = Vec::new();
            self.splitter
                .for_each_chunk(text, |chunk| encode::encode_chunk(chunk.as_bytes(), &self.ranks, &mut out))
                .map(|_| out)
        })
        .map_err(value_error)
    }
}

/// split_text(text, pattern=None, force_regex=False)
/// --
///
/// The chunks of text under the split pattern (default: DEFAULT_PATTERN). For the default pattern a
/// hand-written scanner is used unless force_regex=True (fancy-regex); tests compare the two.
#[pyfunction(pattern = "None", force_regex = "false")]
#[pyo3(text_signature = "(text, pattern=None, force_regex=False)")]
fn split_text(text: &str, pattern: Option<String>, force_regex: bool) -> PyResult<Vec<&str>> {
    let pattern = pattern.unwrap_or_else(|| DEFAULT_PATTERN.to_string());
    // Compiling the pattern costs milliseconds (fancy-regex) and tests call this thousands of times,
    // so the last few splitters are kept.
    static CACHE: Mutex<Vec<(String, bool, Arc<Splitter>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    let hit = cache.iter().find(|(p, f, _)| *p == pattern && *f == force_regex).map(|(_, _, s)| s.clone());
    let splitter = match hit {
        Some(s) => s,
        None => {
            let s = Arc::new(
                Splitter::new(&pattern, force_regex)
                    .map_err(|e| value_error(format!("invalid split pattern {pattern:?}: {e}")))?,
            );
            if cache.len() >= 4 {
                cache.remove(0);
            }
            cache.push((pattern.clone(), force_regex, s.clone()));
            s
        }
    };
    drop(cache);
    splitter.split(text).map_err(value_error)
}

#[pymodule]
fn rustbpe(_py: Python<'_>, m: &PyModule) -> PyResult<()> {
    m.add_class::<Tokenizer>()?;
    m.add_function(wrap_pyfunction!(split_text, m)?)?;
    m.add("DEFAULT_PATTERN", DEFAULT_PATTERN)?;
    Ok(())
}
