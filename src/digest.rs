//! MD5 of many messages at once: the aggregates of a request, the partition keys
//! of a batch.
//!
//! Every KPL aggregate ends in the MD5 of its body, so every byte sent is hashed
//! once, and MD5 is the largest single cost of the delivery path; every record
//! without an explicit hash key is routed by the MD5 of its partition key. One MD5 is a
//! chain of 64 dependent steps per 64-byte block: a core runs it at a few cycles
//! per byte whatever the code, and most of its vector units stay idle. A
//! PutRecords request holds many aggregates, though, and their hashes are
//! independent: they advance together, one in each 32-bit lane of a vector
//! register (the "multi-buffer" technique of Intel's isa-l_crypto `md5_mb`).
//! A lane whose message is done takes the next one, so messages of different
//! lengths keep the lanes busy. The same goes for the partition keys of a batch
//! of records.
//!
//! With AVX-512 a register holds sixteen lanes, and a step is four dependent
//! instructions (the round function is one `vpternlogd`, the rotation one
//! `vprolvd`); with AVX2 alone it holds eight, and a step is six. A request
//! often holds fewer than eight aggregates, so the shorter chain counts as much
//! as the width: the AVX-512 lanes hash eight 50 KiB aggregates (half their
//! lanes idle) in two thirds of the AVX2 lanes' time (`md5_floor` in
//! `benches/producer.rs`).
//!
//! [`digests`] picks the widest lanes the CPU has when there are at least two
//! messages, and the `md-5` crate's single-message code otherwise (one lane of a
//! vector is no faster than it); all give the same digests (the tests compare
//! every implementation the CPU can run on every length around the block
//! boundaries).

use md5::{Digest as _, Md5};

/// Length of an MD5 digest.
pub(crate) const DIGEST_LEN: usize = 16;

/// MD5 of each message, in order.
pub fn digests(messages: &[&[u8]]) -> Vec<[u8; DIGEST_LEN]> {
    #[cfg(target_arch = "x86_64")]
    if messages.len() >= 2 {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { lanes::digests(messages, lanes::compress16) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { lanes::digests(messages, lanes::compress8) };
        }
    }
    one_by_one(messages)
}

/// MD5 of each message with the `md-5` crate, one after the other.
pub(crate) fn one_by_one(messages: &[&[u8]]) -> Vec<[u8; DIGEST_LEN]> {
    messages.iter().map(|m| Md5::digest(m).into()).collect()
}

/// MD5's initial state (RFC 1321, 3.3).
const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The per-step additive constants, `floor(abs(sin(i + 1)) * 2^32)` (RFC 1321, 3.4).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// Left-rotation of each step, by round (four per round, repeated).
const S: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// The message word each step adds.
const fn word(step: usize) -> usize {
    match step / 16 {
        0 => step,
        1 => (5 * step + 1) % 16,
        2 => (3 * step + 5) % 16,
        _ => (7 * step) % 16,
    }
}

/// One message's blocks: its whole 64-byte blocks, then its last one or two
/// blocks with the padding and the bit length (RFC 1321, 3.1–3.2).
struct Blocks<'a> {
    message: &'a [u8],
    /// Whole blocks of the message itself.
    whole: usize,
    /// The rest of the message, padded.
    tail: [u8; 128],
    /// Blocks in all.
    count: usize,
}

impl<'a> Blocks<'a> {
    fn new(message: &'a [u8]) -> Blocks<'a> {
        let whole = message.len() / 64;
        let rest = &message[whole * 64..];
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_blocks = if rest.len() + 9 <= 64 { 1 } else { 2 };
        let bits = (message.len() as u64).wrapping_mul(8);
        tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_le_bytes());
        Blocks {
            message,
            whole,
            tail,
            count: whole + tail_blocks,
        }
    }

    fn block(&self, i: usize) -> &[u8] {
        if i < self.whole {
            &self.message[i * 64..i * 64 + 64]
        } else {
            let t = i - self.whole;
            &self.tail[t * 64..t * 64 + 64]
        }
    }
}

/// Digest bytes of a final state.
fn digest_of(state: [u32; 4]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    for (chunk, w) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;

    use super::{digest_of, word, Blocks, DIGEST_LEN, IV, K, S};

    /// One block of each lane's message into each lane's state:
    /// `state[word][lane]`, `words[word][lane]`.
    pub(super) type Compress<const N: usize> = unsafe fn(&mut [[u32; N]; 4], &[[u32; N]; 16]);

    /// A lane's message: its index among the inputs, its blocks, the next block.
    struct Job<'a> {
        index: usize,
        blocks: Blocks<'a>,
        next: usize,
    }

    /// MD5 of each message, `N` at a time, one per lane of `compress`.
    ///
    /// # Safety
    /// The CPU must have the features `compress` is compiled for.
    pub(super) unsafe fn digests<const N: usize>(
        messages: &[&[u8]],
        compress: Compress<N>,
    ) -> Vec<[u8; DIGEST_LEN]> {
        let mut out = vec![[0u8; DIGEST_LEN]; messages.len()];
        // Longest first: the lanes then run out of work together, not with one
        // long message left alone in the last rounds.
        let mut order: Vec<usize> = (0..messages.len()).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse(messages[i].len()));
        let mut queue = order.into_iter();
        let mut take = || {
            queue.next().map(|index| Job {
                index,
                blocks: Blocks::new(messages[index]),
                next: 0,
            })
        };
        let mut jobs: [Option<Job>; N] = std::array::from_fn(|_| take());
        let mut state = IV.map(|w| [w; N]);
        let mut words = [[0u32; N]; 16];
        while jobs.iter().any(Option::is_some) {
            for (lane, job) in jobs.iter().enumerate() {
                let Some(job) = job else { continue };
                let block = job.blocks.block(job.next);
                for (i, w) in block.chunks_exact(4).enumerate() {
                    words[i][lane] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                }
            }
            // SAFETY: the caller runs this only where `compress` may run.
            unsafe { compress(&mut state, &words) };
            for (lane, slot) in jobs.iter_mut().enumerate() {
                let Some(job) = slot else { continue };
                job.next += 1;
                if job.next < job.blocks.count {
                    continue;
                }
                out[job.index] = digest_of([
                    state[0][lane],
                    state[1][lane],
                    state[2][lane],
                    state[3][lane],
                ]);
                for (w, iv) in IV.iter().enumerate() {
                    state[w][lane] = *iv;
                }
                *slot = take();
            }
        }
        out
    }

    /// Sixteen lanes in a 512-bit register. A step is four dependent
    /// instructions: the round function in one `vpternlogd`, two adds around
    /// one `vprolvd`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress16(state: &mut [[u32; 16]; 4], words: &[[u32; 16]; 16]) {
        // SAFETY: for every intrinsic below, AVX-512F is enabled on this
        // function, and the loads and stores are unaligned ones of whole
        // `[u32; 16]` arrays.
        unsafe {
            macro_rules! load {
                ($v:expr) => {
                    _mm512_loadu_si512($v.as_ptr().cast())
                };
            }
            // `$f` is the round function as a `vpternlogd` truth table of
            // (b, c, d).
            macro_rules! round {
                ($round:expr, $f:literal, $a:ident, $b:ident, $c:ident, $d:ident) => {
                    for i in 0..16 {
                        let step = $round * 16 + i;
                        // a + K + m does not wait for b; f and the rest do.
                        let akm = _mm512_add_epi32(
                            $a,
                            _mm512_add_epi32(
                                _mm512_set1_epi32(K[step] as i32),
                                load!(words[word(step)]),
                            ),
                        );
                        let f = _mm512_ternarylogic_epi32::<$f>($b, $c, $d);
                        let rotated = _mm512_rolv_epi32(
                            _mm512_add_epi32(akm, f),
                            _mm512_set1_epi32(S[$round][i % 4] as i32),
                        );
                        ($a, $b, $c, $d) = ($d, _mm512_add_epi32($b, rotated), $b, $c);
                    }
                };
            }
            let (mut a, mut b, mut c, mut d) = (
                load!(state[0]),
                load!(state[1]),
                load!(state[2]),
                load!(state[3]),
            );
            let (a0, b0, c0, d0) = (a, b, c, d);
            // (b & c) | (!b & d)
            round!(0, 0xca, a, b, c, d);
            // (b & d) | (c & !d)
            round!(1, 0xe4, a, b, c, d);
            // b ^ c ^ d
            round!(2, 0x96, a, b, c, d);
            // c ^ (b | !d)
            round!(3, 0x39, a, b, c, d);
            let sums = [
                _mm512_add_epi32(a, a0),
                _mm512_add_epi32(b, b0),
                _mm512_add_epi32(c, c0),
                _mm512_add_epi32(d, d0),
            ];
            for (v, x) in state.iter_mut().zip(sums) {
                _mm512_storeu_si512(v.as_mut_ptr().cast(), x);
            }
        }
    }

    /// Eight lanes in a 256-bit register, for CPUs with AVX2 but not
    /// AVX-512: a step takes six dependent instructions (the round function in
    /// two, the rotation in two).
    ///
    /// Macros rather than closures: a closure would not inherit the function's
    /// AVX2 and would call each intrinsic instead of inlining it.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn compress8(state: &mut [[u32; 8]; 4], words: &[[u32; 8]; 16]) {
        // SAFETY: for every intrinsic below, AVX2 is enabled on this function,
        // and the loads and stores are unaligned ones of whole `[u32; 8]` arrays.
        unsafe {
            macro_rules! load {
                ($v:expr) => {
                    _mm256_loadu_si256($v.as_ptr().cast())
                };
            }
            macro_rules! round {
                ($round:expr, $a:ident, $b:ident, $c:ident, $d:ident, $f:expr) => {
                    for i in 0..16 {
                        let step = $round * 16 + i;
                        let f = $f;
                        let k = _mm256_set1_epi32(K[step] as i32);
                        let m = load!(words[word(step)]);
                        let t = _mm256_add_epi32(_mm256_add_epi32($a, f), _mm256_add_epi32(k, m));
                        let s = S[$round][i % 4] as i32;
                        let rotated = _mm256_or_si256(
                            _mm256_sllv_epi32(t, _mm256_set1_epi32(s)),
                            _mm256_srlv_epi32(t, _mm256_set1_epi32(32 - s)),
                        );
                        ($a, $b, $c, $d) = ($d, _mm256_add_epi32($b, rotated), $b, $c);
                    }
                };
            }
            let (mut a, mut b, mut c, mut d) = (
                load!(state[0]),
                load!(state[1]),
                load!(state[2]),
                load!(state[3]),
            );
            let (a0, b0, c0, d0) = (a, b, c, d);
            let ones = _mm256_set1_epi32(-1);
            // (b & c) | (!b & d)
            round!(
                0,
                a,
                b,
                c,
                d,
                _mm256_or_si256(_mm256_and_si256(b, c), _mm256_andnot_si256(b, d))
            );
            // (b & d) | (c & !d)
            round!(
                1,
                a,
                b,
                c,
                d,
                _mm256_or_si256(_mm256_and_si256(b, d), _mm256_andnot_si256(d, c))
            );
            // b ^ c ^ d
            round!(2, a, b, c, d, _mm256_xor_si256(_mm256_xor_si256(b, c), d));
            // c ^ (b | !d)
            round!(
                3,
                a,
                b,
                c,
                d,
                _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)))
            );
            let sums = [
                _mm256_add_epi32(a, a0),
                _mm256_add_epi32(b, b0),
                _mm256_add_epi32(c, c0),
                _mm256_add_epi32(d, d0),
            ];
            for (v, x) in state.iter_mut().zip(sums) {
                _mm256_storeu_si256(v.as_mut_ptr().cast(), x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes (a simple LCG): the tests need variety, not secrecy.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    /// The digests of `messages` by every implementation this CPU can run,
    /// each with its name: `digests` itself, and each width of lanes.
    fn every_way(messages: &[&[u8]]) -> Vec<(&'static str, Vec<[u8; DIGEST_LEN]>)> {
        let mut all = vec![("digests", digests(messages))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                let got = unsafe { lanes::digests(messages, lanes::compress8) };
                all.push(("8 lanes", got));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                let got = unsafe { lanes::digests(messages, lanes::compress16) };
                all.push(("16 lanes", got));
            }
        }
        all
    }

    /// Asserts that every implementation gives `md-5`'s digests.
    fn assert_every_way_matches_md5(messages: &[&[u8]], what: &str) {
        let want = one_by_one(messages);
        for (how, got) in every_way(messages) {
            assert_eq!(got, want, "{how}, {what}");
        }
    }

    #[test]
    fn known_digests() {
        // RFC 1321, A.5.
        let cases: [(&[u8], &str); 3] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        let messages: Vec<&[u8]> = cases.iter().map(|c| c.0).collect();
        let mut all = every_way(&messages);
        all.push(("md-5", one_by_one(&messages)));
        for (how, got) in all {
            let hex: Vec<String> = got
                .iter()
                .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
                .collect();
            let want: Vec<&str> = cases.iter().map(|c| c.1).collect();
            assert_eq!(hex, want, "{how}");
        }
    }

    #[test]
    fn every_length_around_the_block_boundaries_matches_md5() {
        // Lengths 0..=300 (every padding case: tails of 0..63 bytes, one or two
        // padding blocks) in groups of different sizes, so lanes finish at
        // different blocks and take new messages.
        let owned: Vec<Vec<u8>> = (0..=300).map(|n| bytes(n as u64, n)).collect();
        for group in [1, 2, 3, 7, 8, 9, 17, 64, 301] {
            for chunk in owned.chunks(group) {
                let messages: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                assert_every_way_matches_md5(&messages, &format!("group {group}"));
            }
        }
    }

    #[test]
    fn aggregate_sized_messages_of_mixed_lengths_match_md5() {
        let owned: Vec<Vec<u8>> = [51_200, 3, 51_137, 200_000, 64, 0, 51_199, 1_000, 9, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(1000 + i as u64, n))
            .collect();
        let messages: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        assert_every_way_matches_md5(&messages, "aggregate sizes");
    }

    #[test]
    fn the_lanes_this_cpu_has_are_tested() {
        // Say which implementations the tests above compared, so a passing
        // run on a CPU without vector lanes is not mistaken for a test of them.
        let hows: Vec<&str> = every_way(&[b"a", b"b"]).into_iter().map(|w| w.0).collect();
        eprintln!("MD5 implementations compared with md-5 on this CPU: {hows:?}");
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                assert!(hows.contains(&"8 lanes"), "{hows:?}");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                assert!(hows.contains(&"16 lanes"), "{hows:?}");
            }
        }
    }
}
