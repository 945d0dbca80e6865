//! Learning the merges: byte-level BPE (Sennrich et al., arXiv:1508.07909; byte-level as in GPT-2) over
//! the unique chunks of the corpus, each weighted by how often it occurred.
//!
//! The naive loop recounts every adjacent pair of every chunk after each merge: O(merges * corpus).
//! Here the pair counts are updated incrementally instead:
//!   * `pair_counts`: pair -> weighted number of occurrences, kept exact after every merge;
//!   * `where_`: pair -> indices of the chunks it may occur in (may hold stale entries: a chunk that no
//!     longer contains the pair is simply scanned and found empty), so a merge only visits chunks that
//!     contain its pair;
//!   * a max-heap of (count, pair) with lazy deletion: entries are never updated in place; an entry whose
//!     stored count differs from the current count is stale and is re-pushed with the current count when
//!     it reaches the top. This is sound because a merge (a, b) -> z only LOWERS the counts of pairs that
//!     existed before it and creates pairs that contain z, which are pushed once the merge is done. So
//!     every stored count is >= the true count, and a top entry whose stored count is current is the max.
//!
//! Tie-break (deterministic, independent of thread count and hash order): among pairs with equal count
//! the lexicographically smallest (left_id, right_id) wins. The heap orders by (count, Reverse(pair)),
//! i.e. by count, then by the u64 key `left << 32 | right`, whose numeric order is exactly that order.
//!
//! Uniqueness rule: if the winning pair's bytes (bytes(left) + bytes(right)) already spell an existing
//! token (it can happen: "ab"+"c" and "a"+"bc"), that pair is skipped for good and the next best is
//! taken, so every token has distinct bytes and the ranks can key a bytes -> rank map (tiktoken).

use ahash::{AHashMap, AHashSet};
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

pub type Pair = u64;

#[inline(always)]
pub fn pair_key(a: u32, b: u32) -> Pair {
    ((a as u64) << 32) | b as u64
}

#[inline(always)]
pub fn pair_parts(p: Pair) -> (u32, u32) {
    ((p >> 32) as u32, p as u32)
}

// -----------------------------------------------------------------------------
// initial pair statistics (parallel over chunks)

/// Weighted counts of every adjacent pair, and for every pair the chunks it occurs in (each chunk once).
fn initial_stats(words: &[Vec<u32>], counts: &[i64]) -> (AHashMap<Pair, i64>, AHashMap<Pair, Vec<u32>>) {
    // Parallel fold over contiguous slices of chunks; each part's maps are merged in part order, so the
    // `where_` lists come out sorted by chunk index whatever the thread count.
    let parts = words.len().min(rayon::current_num_threads() * 4).max(1);
    let part_len = (words.len() + parts - 1) / parts.max(1);
    let partials: Vec<(AHashMap<Pair, i64>, AHashMap<Pair, Vec<u32>>)> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let (lo, hi) = (p * part_len, ((p + 1) * part_len).min(words.len()));
            let mut pc: AHashMap<Pair, i64> = AHashMap::new();
            let mut wh: AHashMap<Pair, Vec<u32>> = AHashMap::new();
            for w in lo..hi {
                let ids = &words[w];
                for k in 0..ids.len().saturating_sub(1) {
                    let key = pair_key(ids[k], ids[k + 1]);
                    *pc.entry(key).or_insert(0) += counts[w];
                    let list = wh.entry(key).or_insert_with(Vec::new);
                    if list.last() != Some(&(w as u32)) {
                        list.push(w as u32);
                    }
                }
            }
            (pc, wh)
        })
        .collect();
    let mut partials = partials.into_iter();
    let (mut pair_counts, mut where_) = partials.next().unwrap_or_default();
    for (pc, wh) in partials {
        for (k, c) in pc {
            *pair_counts.entry(k).or_insert(0) += c;
        }
        for (k, mut list) in wh {
            where_.entry(k).or_insert_with(Vec::new).append(&mut list);
        }
    }
    (pair_counts, where_)
}

// -----------------------------------------------------------------------------
// one merge applied to one chunk

/// Replaces every (a, b) in `ids` by `z`, left to right without overlap (so a a a -> z a), in place, and
/// reports the change in pair occurrences: `on_pair(pair, -1)` for every old pair that touched a merged
/// position, `on_pair(pair, +1)` for every new pair that contains a new z. All other pairs are unchanged.
/// Returns false when the chunk holds no (a, b) (a stale `where_` entry).
///
/// Runs of sites need care not to count a pair twice: in `x a b a b y` the old pair (b, a) between the
/// two sites is removed once (by the first site, as its right neighbour), and the new (z, z) is added
/// once (by the second site, as its left neighbour).
fn merge_word(ids: &mut Vec<u32>, a: u32, b: u32, z: u32, mut on_pair: impl FnMut(Pair, i64)) -> bool {
    let n = ids.len();
    let is_site = |ids: &[u32], i: usize| i + 1 < n && ids[i] == a && ids[i + 1] == b;
    let (mut read, mut write) = (0, 0);
    let mut prev_was_site = false; // did the token just written come from a merge?
    let mut any = false;
    while read < n {
        if is_site(ids, read) {
            any = true;
            // old pairs around the site: (left, a) unless the left is a fresh z, (a, b), (b, right)
            if read > 0 && !prev_was_site {
                on_pair(pair_key(ids[read - 1], a), -1);
            }
            on_pair(pair_key(a, b), -1);
            let right_is_site = is_site(ids, read + 2);
            if read + 2 < n {
                on_pair(pair_key(b, ids[read + 2]), -1);
            }
            // new pairs: (left, z) with the left as already rewritten (maybe a z), and (z, right) unless
            // the right is itself a site (then that site adds (z, z) as its left pair)
            if write > 0 {
                on_pair(pair_key(ids[write - 1], z), 1);
            }
            if read + 2 < n && !right_is_site {
                on_pair(pair_key(z, ids[read + 2]), 1);
            }
            ids[write] = z;
            read += 2;
            prev_was_site = true;
        } else {
            ids[write] = ids[read];
            read += 1;
            prev_was_site = false;
        }
        write += 1;
    }
    ids.truncate(write);
    any
}

// -----------------------------------------------------------------------------
// the merge loop

/// Learns up to `num_merges` merges over the unique chunks `words` (byte ids) weighted by `counts`.
/// Returns the merges in order: merge k creates token id 256 + k. Stops early when no pair is left.
pub fn learn_merges(mut words: Vec<Vec<u32>>, counts: Vec<i64>, num_merges: usize, verbose: bool) -> Vec<(u32, u32)> {
    let t0 = Instant::now();
    let (mut pair_counts, mut where_) = initial_stats(&words, &counts);
    if verbose {
        eprintln!(
            "rustbpe: {} unique chunks, {} distinct pairs; learning {} merges ({:.1}s)",
            words.len(),
            pair_counts.len(),
            num_merges,
            t0.elapsed().as_secs_f64()
        );
    }
    let mut heap: BinaryHeap<(i64, Reverse<Pair>)> =
        pair_counts.iter().filter(|(_, &c)| c > 0).map(|(&p, &c)| (c, Reverse(p))).collect();

    // bytes of every token, to enforce the uniqueness rule
    let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut known: AHashSet<Vec<u8>> = token_bytes.iter().cloned().collect();

    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(num_merges.min(1 << 20));
    let log_every = (num_merges / 10).max(1);
    let mut new_pairs: AHashMap<Pair, ()> = AHashMap::new();
    while merges.len() < num_merges {
        // Pop until the top entry is current (see the module docs for why that makes it the max).
        let (stored, Reverse(pair)) = match heap.pop() {
            Some(top) => top,
            None => break, // no pair left: every chunk is a single token
        };
        let current = pair_counts.get(&pair).copied().unwrap_or(0);
        if current <= 0 {
            continue; // merged already, or every occurrence was consumed by other merges
        }
        if stored != current {
            heap.push((current, Reverse(pair)));
            continue;
        }
        let (a, b) = pair_parts(pair);
        let mut bytes = token_bytes[a as usize].clone();
        bytes.extend_from_slice(&token_bytes[b as usize]);
        if !known.insert(bytes.clone()) {
            continue; // uniqueness rule: these bytes are a token already; never merge this pair
        }
        let z = 256 + merges.len() as u32;
        merges.push((a, b));
        token_bytes.push(bytes);

        // Apply the merge to every chunk that may contain the pair, updating counts as we go.
        let mut sites = where_.remove(&pair).unwrap_or_default();
        sites.sort_unstable();
        sites.dedup();
        new_pairs.clear();
        for &w in &sites {
            let weight = counts[w as usize];
            let _ = merge_word(&mut words[w as usize], a, b, z, |p, sign| {
                *pair_counts.entry(p).or_insert(0) += sign * weight;
                if sign > 0 {
                    new_pairs.insert(p, ());
                    let list = where_.entry(p).or_insert_with(Vec::new);
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                }
            });
        }
        pair_counts.remove(&pair);
        // New pairs (all contain z) enter the heap once, with their final count for this merge.
        for (&p, _) in new_pairs.iter() {
            let c = pair_counts.get(&p).copied().unwrap_or(0);
            if c > 0 {
                heap.push((c, Reverse(p)));
            }
        }
        if verbose && merges.len() % log_every == 0 {
            eprintln!(
                "rustbpe: merge {}/{} ({:.0}%) count {} elapsed {:.1}s",
                merges.len(),
                num_merges,
                100.0 * merges.len() as f64 / num_merges as f64,
                current,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    merges
}

// -----------------------------------------------------------------------------
// tests: the incremental bookkeeping against a full recount

#[cfg(test)]
mod tests {
    use super::*;

    fn pair_multiset(ids: &[u32]) -> AHashMap<Pair, i64> {
        let mut m = AHashMap::new();
        for k in 0..ids.len().saturating_sub(1) {
            *m.entry(pair_key(ids[k], ids[k + 1])).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn merge_word_deltas_equal_recount() {
        let mut state: u64 = 0x2545F4914F6CDD1D;
        for _ in 0..50000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            // tiny alphabet {0, 1, 2} so sites overlap and run into each other often
            let ids: Vec<u32> = (0..len).map(|k| ((state >> (2 * k + 8)) % 3) as u32).collect();
            let (a, b) = ((state >> 40) as u32 % 3, (state >> 50) as u32 % 3);
            // expected: left-to-right non-overlapping rewrite, then the pair multiset difference
            let mut expect = Vec::new();
            let mut i = 0;
            while i < ids.len() {
                if i + 1 < ids.len() && ids[i] == a && ids[i + 1] == b {
                    expect.push(9);
                    i += 2;
                } else {
                    expect.push(ids[i]);
                    i += 1;
                }
            }
            let mut delta = pair_multiset(&expect);
            for (p, c) in pair_multiset(&ids) {
                *delta.entry(p).or_insert(0) -= c;
            }
            delta.retain(|_, c| *c != 0);
            let mut got_ids = ids.clone();
            let mut got: AHashMap<Pair, i64> = AHashMap::new();
            let changed = merge_word(&mut got_ids, a, b, 9, |p, s| *got.entry(p).or_insert(0) += s);
            got.retain(|_, c| *c != 0);
            assert_eq!(got_ids, expect, "ids {ids:?} merge ({a},{b})");
            assert_eq!(got, delta, "ids {ids:?} merge ({a},{b})");
            assert_eq!(changed, expect != ids);
        }
    }
}
