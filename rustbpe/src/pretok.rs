//! Pre-tokenization: cut text into chunks ("words") with the split pattern; BPE never merges across chunks.
//!
//! Two implementations of the same contract:
//!   * `Splitter::Regex`: fancy-regex, for any user-supplied pattern (possessive quantifiers and
//!     lookahead need a backtracking engine, which is why the regex dominates the training time).
//!   * `Splitter::Default`: a hand-written scanner for DEFAULT_PATTERN only, several times faster. It
//!     takes its character classes (\p{L}, \p{N}, \s and the case-insensitive contraction letters)
//!     from regex-syntax, the very tables fancy-regex uses, so the two can only disagree through a bug
//!     in the scanner; tests/test_rustbpe.py and the unit tests below compare them chunk by chunk.

use fancy_regex::Regex;
use regex_syntax::hir::{Class, HirKind};

// -----------------------------------------------------------------------------
// the pattern

/// GPT-4's (cl100k) split pattern with digit groups of at most 2 (`\p{N}{1,2}` instead of `{1,3}`),
/// as in nanochat: small vocabularies waste fewer tokens on 3-digit numbers.
pub const DEFAULT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

// -----------------------------------------------------------------------------
// character classes from regex-syntax's Unicode tables

const LETTER: u8 = 1; // \p{L}
const NUMBER: u8 = 2; // \p{N}
const SPACE: u8 = 4; // \s (Unicode White_Space)

/// The (inclusive) code point ranges of a single-class regex such as `\p{L}`.
fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new().parse(pattern).expect("built-in class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => {
            cls.iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
        }
        other => panic!("expected a Unicode class for {pattern}, got {other:?}"),
    }
}

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// Per-code-point class flags (1.1 MB table: one byte per code point, built once per Splitter) and the
/// letter sets of the contractions `'s 'd 'm 't 'll 've 're` under (?i) (which adds e.g. U+017F 'ſ' to s).
pub struct CharClasses {
    table: Vec<u8>,
    sdmt: Vec<(u32, u32)>,
    l: Vec<(u32, u32)>,
    v: Vec<(u32, u32)>,
    e: Vec<(u32, u32)>,
    r: Vec<(u32, u32)>,
}

impl CharClasses {
    pub fn new() -> Self {
        let mut table = vec![0u8; 0x110000];
        for (flag, pat) in [(LETTER, r"\p{L}"), (NUMBER, r"\p{N}"), (SPACE, r"\s")] {
            for (lo, hi) in class_ranges(pat) {
                for c in lo..=hi {
                    table[c as usize] |= flag;
                }
            }
        }
        CharClasses {
            table,
            sdmt: class_ranges("(?i)[sdmt]"),
            l: class_ranges("(?i)[l]"),
            v: class_ranges("(?i)[v]"),
            e: class_ranges("(?i)[e]"),
            r: class_ranges("(?i)[r]"),
        }
    }

    #[inline(always)]
    fn flags(&self, c: char) -> u8 {
        self.table[c as usize]
    }
}

// -----------------------------------------------------------------------------
// the hand-written scanner for DEFAULT_PATTERN

/// The char starting at byte `i` of `s` (i < s.len(), on a char boundary) and its UTF-8 length.
#[inline(always)]
fn char_at(s: &str, i: usize) -> (char, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        (b as char, 1)
    } else {
        let c = s[i..].chars().next().unwrap();
        (c, c.len_utf8())
    }
}

impl CharClasses {
    /// End (byte offset) of the run of chars starting at `i` whose flags satisfy `keep`.
    #[inline(always)]
    fn run_end(&self, s: &str, mut i: usize, keep: impl Fn(char, u8) -> bool) -> usize {
        while i < s.len() {
            let (c, n) = char_at(s, i);
            if !keep(c, self.flags(c)) {
                break;
            }
            i += n;
        }
        i
    }

    /// Length in bytes of the contraction at `i` (which holds a `'`), or 0. Mirrors `'(?i:[sdmt]|ll|ve|re)`.
    fn contraction_len(&self, s: &str, i: usize) -> usize {
        let j = i + 1;
        if j >= s.len() {
            return 0;
        }
        let (c1, n1) = char_at(s, j);
        if in_ranges(&self.sdmt, c1) {
            return 1 + n1;
        }
        if j + n1 >= s.len() {
            return 0;
        }
        let (c2, n2) = char_at(s, j + n1);
        let pair_ok = (in_ranges(&self.l, c1) && in_ranges(&self.l, c2))
            || (in_ranges(&self.v, c1) && in_ranges(&self.e, c2))
            || (in_ranges(&self.r, c1) && in_ranges(&self.e, c2));
        if pair_ok {
            1 + n1 + n2
        } else {
            0
        }
    }

    /// End of the chunk that DEFAULT_PATTERN matches at byte `i` (i < s.len()). The regex is an ordered
    /// alternation (leftmost-first), so the alternatives are tried in the same order here:
    ///   1. `'(?i:[sdmt]|ll|ve|re)`         contractions
    ///   2. `[^\r\n\p{L}\p{N}]?+\p{L}+`      a word, optionally led by one non-letter/digit (e.g. a space)
    ///   3. `\p{N}{1,2}`                     one or two digits
    ///   4. ` ?[^\s\p{L}\p{N}]++[\r\n]*`     punctuation run, optionally led by a space, plus newlines
    ///   5. `\s*[\r\n]`                      whitespace up to and including its last newline
    ///   6. `\s+(?!\S)`                      whitespace, leaving the last char to lead the next word
    ///   7. `\s+`                            whitespace (a single char before a non-space)
    /// Every char is a letter, number, whitespace or "other", so some alternative always matches.
    pub fn chunk_end(&self, s: &str, i: usize) -> usize {
        let is_punct = |_: char, f: u8| f & (LETTER | NUMBER | SPACE) == 0;
        let is_letter = |_: char, f: u8| f & LETTER != 0;
        let is_newline = |c: char, _: u8| c == '\r' || c == '\n';
        let (c, n) = char_at(s, i);
        let f = self.flags(c);
        // 1. contractions
        if c == '\'' {
            let k = self.contraction_len(s, i);
            if k > 0 {
                return i + k;
            }
        }
        // 2. letters, possibly led by one char that is not \r, \n, a letter or a number
        if f & LETTER != 0 {
            return self.run_end(s, i + n, is_letter);
        }
        let next = if i + n < s.len() { Some(char_at(s, i + n)) } else { None };
        let next_flags = next.map(|(c1, _)| self.flags(c1)).unwrap_or(0);
        if c != '\r' && c != '\n' && f & NUMBER == 0 && next_flags & LETTER != 0 {
            return self.run_end(s, i + n, is_letter);
        }
        // 3. one or two numbers
        if f & NUMBER != 0 {
            return match next {
                Some((_, n1)) if next_flags & NUMBER != 0 => i + n + n1,
                _ => i + n,
            };
        }
        // 4. punctuation (possessive, so no backtracking), optionally led by a single ' '
        let punct_start = if c == ' ' && next.is_some() && next_flags & (LETTER | NUMBER | SPACE) == 0 {
            Some(i + n)
        } else if f & (LETTER | NUMBER | SPACE) == 0 {
            Some(i)
        } else {
            None
        };
        if let Some(p) = punct_start {
            let end = self.run_end(s, p, is_punct);
            return self.run_end(s, end, is_newline);
        }
        // 5-7. whitespace: scan the maximal run, remembering where its last newline ends and where its
        // last char starts.
        let mut j = i;
        let mut after_last_newline = None;
        let mut last_char_start = i;
        while j < s.len() {
            let (cj, nj) = char_at(s, j);
            if self.flags(cj) & SPACE == 0 {
                break;
            }
            last_char_start = j;
            j += nj;
            if cj == '\r' || cj == '\n' {
                after_last_newline = Some(j);
            }
        }
        if let Some(end) = after_last_newline {
            return end; // 5. \s*[\r\n] backtracks to the last newline of the run
        }
        if j == s.len() || last_char_start == i {
            return j; // 6. at end of text (nothing non-space follows), or 7. a single whitespace char
        }
        last_char_start // 6. give the last whitespace char back: it leads the next chunk
    }
}

// -----------------------------------------------------------------------------
// the splitter: one of the two, chosen from the pattern

pub enum Splitter {
    Default(CharClasses),
    Regex(Regex),
}

impl Splitter {
    /// The fast scanner for DEFAULT_PATTERN (unless `force_regex`), fancy-regex for anything else.
    /// Err(message) when the pattern does not compile.
    pub fn new(pattern: &str, force_regex: bool) -> Result<Self, String> {
        if pattern == DEFAULT_PATTERN && !force_regex {
            return Ok(Splitter::Default(CharClasses::new()));
        }
        Regex::new(pattern).map(Splitter::Regex).map_err(|e| e.to_string())
    }

    /// Calls `f` on every chunk of `text`, in order. Err(message) if the regex engine gives up
    /// (fancy-regex has a backtracking limit; the default scanner never fails).
    pub fn for_each_chunk<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) -> Result<(), String> {
        match self {
            Splitter::Default(classes) => {
                let mut i = 0;
                while i < text.len() {
                    let end = classes.chunk_end(text, i);
                    f(&text[i..end]);
                    i = end;
                }
            }
            Splitter::Regex(re) => {
                for m in re.find_iter(text) {
                    let m = m.map_err(|e| format!("regex failed while splitting text: {e}"))?;
                    f(m.as_str());
                }
            }
        }
        Ok(())
    }

    pub fn split<'t>(&self, text: &'t str) -> Result<Vec<&'t str>, String> {
        let mut out = Vec::new();
        self.for_each_chunk(text, |c| out.push(c))?;
        Ok(out)
    }
}

// -----------------------------------------------------------------------------
// tests: the scanner must agree with fancy-regex chunk for chunk

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Vec<String>, Vec<String>) {
        let fast = Splitter::new(DEFAULT_PATTERN, false).unwrap();
        let slow = Splitter::new(DEFAULT_PATTERN, true).unwrap();
        let a = fast.split(text).unwrap().iter().map(|s| s.to_string()).collect();
        let b = slow.split(text).unwrap().iter().map(|s| s.to_string()).collect();
        (a, b)
    }

    #[test]
    fn scanner_matches_regex_on_examples() {
        for text in [
            "Hello world! It's 2024... I'll've we're 'S 'LL 'ſ",
            "  leading spaces\n\n\ttabs\r\n  \nend   ",
            "numbers 1234567 ١٢٣ ⅷ² x1y2",
            "emoji 👋🏽 CJK 日本語のテキスト 한국어",
            "code: fn main() { let x = a[i]+b; }\n    return x;\n",
            "''' '\n' ' \u{a0}\u{2003}x \u{85}\u{2028}y",
            "",
            " ",
            "'",
        ] {
            let (a, b) = both(text);
            assert_eq!(a, b, "mismatch on {text:?}");
        }
    }

    #[test]
    fn scanner_matches_regex_on_random_strings() {
        // A tiny xorshift PRNG keeps this test free of extra crates. The alphabet is adversarial: every
        // class boundary of the pattern (apostrophes, contraction letters, newlines, other whitespace,
        // digits of several scripts, letters, punctuation, astral chars).
        let alphabet: Vec<char> = "'sSdmtlLvVeErRſK \t\n\r\u{b}\u{c}\u{a0}\u{85}\u{2028}\u{3000}09٣²½ⅷaZéß日本한👋🏽.,!?-_()[]{}\"#$%&*+/<=>@\\^`|~\u{300}\u{200d}\u{feff}"
            .chars()
            .collect();
        let mut state: u64 = 0x9E3779B97F4A7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let (a, b) = both(&text);
            assert_eq!(a, b, "mismatch on {text:?}");
        }
    }

    #[test]
    fn every_code_point_alone_and_in_context() {
        // Each code point on its own, after a space/apostrophe, and before a letter: covers every entry
        // of the class table against the regex engine's own classification.
        let fast = Splitter::new(DEFAULT_PATTERN, false).unwrap();
        let slow = Splitter::new(DEFAULT_PATTERN, true).unwrap();
        let mut text = String::new();
        for cp in (0u32..0x110000).step_by(1) {
            if let Some(c) = char::from_u32(cp) {
                text.clear();
                text.push(' ');
                text.push(c);
                text.push('a');
                text.push('\'');
                text.push(c);
                text.push(c);
                text.push('1');
                text.push(c);
                text.push('\n');
                assert_eq!(fast.split(&text).unwrap(), slow.split(&text).unwrap(), "mismatch around U+{cp:04X}");
            }
        }
    }
}
