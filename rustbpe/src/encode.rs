//! The reference encoder: the same greedy rule tiktoken applies, written plainly.
//!
//! A chunk starts as its bytes; while two adjacent pieces concatenate to a token, merge the adjacent
//! pair whose concatenation has the LOWEST rank (the leftmost one on a tie). Ranks are keyed by bytes,
//! not by (left, right) ids, exactly like tiktoken's mergeable_ranks, so `Tokenizer.encode` and a
//! tiktoken Encoding built from `get_mergeable_ranks()` must agree token for token.
//! O(n^2) per chunk: fine for a reference and for tests, not meant for bulk encoding (use tiktoken).

use ahash::AHashMap;

pub fn encode_chunk(chunk: &[u8], ranks: &AHashMap<Vec<u8>, u32>, out: &mut Vec<u32>) {
    // pieces as byte ranges [start, end) of `chunk`
    let mut pieces: Vec<(usize, usize)> = (0..chunk.len()).map(|i| (i, i + 1)).collect();
    loop {
        let mut best: Option<(u32, usize)> = None; // (rank, index of the left piece)
        for k in 0..pieces.len().saturating_sub(1) {
            let merged = &chunk[pieces[k].0..pieces[k + 1].1];
            if let Some(&r) = ranks.get(merged) {
                if best.map_or(true, |(br, _)| r < br) {
                    best = Some((r, k));
                }
            }
        }
        match best {
            None => break,
            Some((_, k)) => {
                pieces[k].1 = pieces[k + 1].1;
                pieces.remove(k + 1);
            }
        }
    }
    out.extend(pieces.iter().map(|&(s, e)| ranks[&chunk[s..e]]));
}
