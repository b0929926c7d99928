//! Deterministic input generation: a small PRNG, and mutations of seed
//! inputs in the style of AFL's "havoc" stage (bit flips, interesting
//! values, inserted dictionary words, repeated and spliced ranges).

/// SplitMix64: tiny, fast, and the same sequence on every platform and
/// for every version of this crate's dependencies, so that a seed and an
/// input number always name the same input.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator for input `n` of a run started with `seed`.
    pub fn for_input(seed: u64, n: u64) -> Rng {
        let mut r = Rng(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    /// The next number of the sequence, uniform over all of `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A uniformly random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A length up to `max`, small ones far more likely: a random number
    /// of bits, then a random number of that many bits.
    pub fn size(&mut self, max: usize) -> usize {
        let bits = usize::BITS - max.leading_zeros();
        let b = self.below(bits as usize + 1);
        let n = if b == 0 { 0 } else { self.below(1 << b) };
        n.min(max)
    }

    /// One of `items`, uniformly; `None` when it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// FNV-1a, to fold what an input did into a small "feature" number.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Folds in `b`, byte by byte.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Folds in `s` and a terminator (0xff, never in UTF-8), so that
    /// `"ab", "c"` and `"a", "bc"` differ.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }

    /// Folds in `n`, as its 8 little-endian bytes.
    pub fn num(&mut self, n: u64) -> &mut Self {
        self.bytes(&n.to_le_bytes())
    }

    /// The hash of everything folded in so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Bytes that decoders treat specially: varint markers (251-253 start
/// bincode's wider integers), boundaries, separators.
const INTERESTING_BYTES: [u8; 16] = [
    0, 1, 2, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, b'\n', b' ', b'/', b'#', b'\\',
];

/// Integers worth writing into an input: limits of the types, and the
/// limits the decoders enforce.
const INTERESTING_INTS: [u64; 14] = [
    0,
    1,
    255,
    256,
    4095,
    4096,
    65535,
    65536,
    1 << 20,
    4 << 20,
    (4 << 20) + 1,
    u32::MAX as u64,
    i64::MAX as u64,
    u64::MAX,
];

/// Applies one random mutation to `data`, keeping it at most `max_len`
/// bytes. `dict` holds words of the input language; `other` is another
/// input to splice from.
// Over 100 lines: one arm per mutation, a list best read whole.
pub fn mutate_once(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    dict: &[&[u8]],
    other: &[u8],
    max_len: usize,
) {
    let len = data.len();
    match rng.below(15) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // A random byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        // An interesting byte.
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
        }
        // Add or subtract a little.
        3 if len > 0 => {
            let i = rng.below(len);
            let d = rng.below(35) as u8;
            data[i] = if rng.one_in(2) {
                data[i].wrapping_add(d)
            } else {
                data[i].wrapping_sub(d)
            };
        }
        // Insert random bytes.
        4 => {
            let n = 1 + rng.below(8);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            data.splice(at..at, bytes);
        }
        // Delete a range.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.size(len - at - 1);
            data.drain(at..(at + n).min(len));
        }
        // Copy a range elsewhere.
        6 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.size(len - from - 1);
            let piece = data[from..(from + n).min(len)].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        // Repeat a short range many times: long names, long lists, deep
        // nesting.
        7 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.size((len - from - 1).min(16));
            let piece = data[from..(from + n).min(len)].to_vec();
            let times = 1 + rng.size(4096);
            let mut rep = Vec::with_capacity(piece.len() * times);
            for _ in 0..times {
                rep.extend_from_slice(&piece);
                if rep.len() > max_len {
                    break;
                }
            }
            data.splice(from..from, rep);
        }
        // Insert a dictionary word.
        8 | 9 => {
            if let Some(w) = rng.pick(dict) {
                let at = rng.below(len + 1);
                data.splice(at..at, w.iter().copied());
            }
        }
        // Overwrite with a dictionary word.
        10 => {
            if let Some(w) = rng.pick(dict) {
                let at = rng.below(len + 1);
                let end = (at + w.len()).min(len);
                data.splice(at..end, w.iter().copied());
            }
        }
        // Splice: a prefix of this input, a suffix of the other.
        11 if !other.is_empty() => {
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        // Insert or overwrite an interesting integer, in either byte order.
        12 => {
            let v = INTERESTING_INTS[rng.below(INTERESTING_INTS.len())];
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let bytes = if rng.one_in(2) {
                v.to_le_bytes()[..width].to_vec()
            } else {
                v.to_be_bytes()[8 - width..].to_vec()
            };
            let at = rng.below(len + 1);
            if rng.one_in(2) {
                let end = (at + width).min(len);
                data.splice(at..end, bytes);
            } else {
                data.splice(at..at, bytes);
            }
        }
        // Truncate.
        13 if len > 0 => data.truncate(rng.below(len)),
        // Swap two bytes.
        _ if len > 1 => {
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        _ => data.push(rng.byte()),
    }
    data.truncate(max_len);
}

/// Random bytes, `max_len` at most.
pub fn random_bytes(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let n = rng.size(max_len);
    (0..n).map(|_| rng.byte()).collect()
}

/// Random words of the dictionary and random printable characters: for
/// text formats, something that lexes.
pub fn random_text(rng: &mut Rng, dict: &[&[u8]], max_len: usize) -> Vec<u8> {
    let n = rng.size(256);
    let mut out = Vec::new();
    for _ in 0..n {
        match rng.pick(dict) {
            Some(w) if !rng.one_in(4) => out.extend_from_slice(w),
            _ => out.push(b' ' + (rng.below(95) as u8)),
        }
        if out.len() >= max_len {
            break;
        }
    }
    out.truncate(max_len);
    out
}
