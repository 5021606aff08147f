//! Near-duplicate detection for new records: MinHash signatures of character 3-grams, and the
//! check every augmentation (by rule or by a teacher) runs on what it makes — a new text as
//! similar as a threshold to a known one (the parent's, or one kept before) is a duplicate; one as
//! similar to a validation prompt would leak the validation set into training.

/// A MinHash signature: the least hash of the text's 3-grams under each of the hash functions.
pub type Signature = [u64; MinHash::HASHES];

/// MinHash over character 3-grams: the share of equal entries of two signatures estimates the
/// Jaccard similarity of the two texts' 3-gram sets (within about ±0.09 at 128 hashes).
pub struct MinHash {
    salts: [u64; MinHash::HASHES],
}

impl MinHash {
    pub const HASHES: usize = 128;

    pub fn new(seed: u64) -> Self {
        // splitmix64's stream from the seed: the salts augmentations were made with.
        let start = seed ^ 0x5851_F42D_4C95_7F2D;
        MinHash {
            salts: std::array::from_fn(|i| {
                mix(start.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            }),
        }
    }

    pub fn signature(&self, text: &str) -> Signature {
        let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let grams: Vec<u64> = if chars.len() < 3 {
            vec![fnv(&chars)]
        } else {
            chars.windows(3).map(fnv).collect()
        };
        std::array::from_fn(|i| {
            grams
                .iter()
                .map(|&g| mix(g ^ self.salts[i]))
                .min()
                .unwrap_or(u64::MAX)
        })
    }

    pub fn similarity(a: &Signature, b: &Signature) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / MinHash::HASHES as f64
    }
}

/// FNV-1a of a few characters.
fn fnv(chars: &[char]) -> u64 {
    chars.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads a gram's hash under each salt.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What [`NearDuplicates::admit`] found a new text to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Kept: from now on later texts are compared with it too.
    New,
    /// Empty, or a near-duplicate of a known text.
    Duplicate,
    /// A near-duplicate of a held-out (validation) text.
    Leaking,
}

/// The texts known so far and the held-out ones, as signatures.
pub struct NearDuplicates {
    hasher: MinHash,
    threshold: f64,
    known: Vec<Signature>,
    held_out: Vec<Signature>,
}

impl NearDuplicates {
    /// `threshold`: the estimated Jaccard similarity at which two texts are the same.
    pub fn new<'a>(
        seed: u64,
        threshold: f64,
        known: impl IntoIterator<Item = &'a str>,
        held_out: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let hasher = MinHash::new(seed);
        let known = known.into_iter().map(|t| hasher.signature(t)).collect();
        let held_out = held_out.into_iter().map(|t| hasher.signature(t)).collect();
        NearDuplicates {
            hasher,
            threshold,
            known,
            held_out,
        }
    }

    /// Checks `text` (a leak first), and knows it from now on when it is new.
    pub fn admit(&mut self, text: &str) -> Verdict {
        let signature = self.hasher.signature(text);
        let similar = |pool: &[Signature]| {
            pool.iter()
                .any(|b| MinHash::similarity(&signature, b) >= self.threshold)
        };
        if similar(&self.held_out) {
            Verdict::Leaking
        } else if text.trim().is_empty() || similar(&self.known) {
            Verdict::Duplicate
        } else {
            self.known.push(signature);
            Verdict::New
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minhash_estimates_jaccard_of_3_grams() {
        let hasher = MinHash::new(7);
        let a = hasher.signature("高血压患者日常饮食应该注意什么问题");
        assert_eq!(MinHash::similarity(&a, &a), 1.0);
        let b = hasher.signature("高血压患者日常饮食应该注意什么");
        // 15 shared 3-grams of 17 and 15: Jaccard 15 / 17 ≈ 0.88.
        let estimate = MinHash::similarity(&a, &b);
        assert!((estimate - 15.0 / 17.0).abs() < 0.1, "{estimate}");
        let c = hasher.signature("今天天气怎么样，适合出去散步吗");
        assert!(MinHash::similarity(&a, &c) < 0.1);
    }

    #[test]
    fn leaks_are_found_first_and_new_texts_become_known() {
        let mut check = NearDuplicates::new(
            1,
            0.8,
            ["高血压患者日常饮食应该注意什么问题"],
            ["糖尿病患者可以吃水果吗，哪些比较合适"],
        );
        assert_eq!(
            check.admit("高血压患者日常饮食应该注意什么问题"),
            Verdict::Duplicate
        );
        assert_eq!(
            check.admit("糖尿病患者可以吃水果吗，哪些比较合适"),
            Verdict::Leaking
        );
        assert_eq!(check.admit("  "), Verdict::Duplicate);
        assert_eq!(check.admit("感冒发烧时应该怎么护理"), Verdict::New);
        assert_eq!(check.admit("感冒发烧时应该怎么护理"), Verdict::Duplicate);
    }
}
