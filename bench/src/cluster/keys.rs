//! What the kv load asks for next: GET or SET (by `--read-ratio`) and which key, uniform over
//! `--keys` or skewed by `--zipf`.
//!
//! Owns the seeded random choices of one client thread ([`Chooser`]) and the key names: key `i`
//! is `key:` and `i` in decimal, zero-padded to the width of the largest key, so every key has
//! the same length and building one allocates nothing. The Zipf generator is the one YCSB uses
//! (Gray et al., "Quickly generating billion-record synthetic databases", 1994): one O(keys)
//! sum when the run starts, then O(1) per draw; key 0 is the most popular.

use serde::Serialize;

/// Most keys a run may use (the Zipf set-up sums over every key once).
pub const KEYS_MAX: u64 = 100_000_000;

/// The prefix of every key.
const KEY_PREFIX: &[u8] = b"key:";

/// Longest key: the prefix and up to 20 digits.
const KEY_BYTES_MAX: usize = 4 + 20;

/// A command of the kv load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    /// `SET key value`.
    Set,
    /// `GET key`.
    Get,
}

/// The key space and the mix, shared by every client thread.
#[derive(Clone, Debug)]
pub struct Workload {
    keys: u64,
    read_ratio: f64,
    zipf: Option<Zipf>,
    /// Digits of the largest key.
    width: usize,
}

impl Workload {
    /// The number of keys.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// `keys` keys (1..=[`KEYS_MAX`]), GETs with probability `read_ratio` (0..=1), uniform or
    /// Zipf-skewed with exponent `zipf` (0 < zipf < 1).
    pub fn new(keys: u64, read_ratio: f64, zipf: Option<f64>) -> Workload {
        assert!(
            (1..=KEYS_MAX).contains(&keys),
            "keys {keys} out of 1..={KEYS_MAX}"
        );
        assert!(
            (0.0..=1.0).contains(&read_ratio),
            "read ratio {read_ratio} out of 0..=1"
        );
        Workload {
            keys,
            read_ratio,
            zipf: zipf.map(|theta| Zipf::new(keys, theta)),
            width: (keys - 1).to_string().len(),
        }
    }

    /// A chooser for client thread `index` (seeded by it, so runs repeat their choices).
    pub fn chooser(&self, index: usize) -> Chooser {
        let mut key = [b'0'; KEY_BYTES_MAX];
        key[..KEY_PREFIX.len()].copy_from_slice(KEY_PREFIX);
        Chooser {
            workload: self.clone(),
            rng: SplitMix64(0x6b76_6c6f_6164 ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            key,
        }
    }
}

/// One client thread's choices.
#[derive(Debug)]
pub struct Chooser {
    workload: Workload,
    rng: SplitMix64,
    key: [u8; KEY_BYTES_MAX],
}

impl Chooser {
    /// The next command and its key.
    pub fn next(&mut self) -> (Op, &[u8]) {
        let op = if self.rng.unit() < self.workload.read_ratio {
            Op::Get
        } else {
            Op::Set
        };
        let index = match &self.workload.zipf {
            Some(zipf) => zipf.sample(self.rng.unit()),
            None => self.rng.below(self.workload.keys),
        };
        (op, self.key(index))
    }

    /// The name of key `index` (below the workload's key count).
    pub fn key(&mut self, index: u64) -> &[u8] {
        assert!(
            index < self.workload.keys,
            "key {index} of {}",
            self.workload.keys
        );
        let mut digits = [0u8; 20];
        let start = crate::resp::encode::decimal_into(&mut digits, index);
        let width = self.workload.width;
        let end = KEY_PREFIX.len() + width;
        let key = &mut self.key[KEY_PREFIX.len()..end];
        key.fill(b'0');
        key[width - (20 - start)..].copy_from_slice(&digits[start..]);
        &self.key[..end]
    }
}

/// SplitMix64: a small, fast, seeded generator (not for secrets).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, bound).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Zipf-distributed ranks 0..n with exponent theta in (0, 1).
#[derive(Clone, Debug)]
struct Zipf {
    n: u64,
    theta: f64,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Zipf {
        assert!(
            theta > 0.0 && theta < 1.0,
            "zipf exponent {theta} out of (0, 1)"
        );
        let zeta = |count: u64| (1..=count).map(|i| (i as f64).powf(-theta)).sum::<f64>();
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        Zipf {
            n,
            theta,
            zeta_n,
            alpha: 1.0 / (1.0 - theta),
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
        }
    }

    /// The rank for a uniform draw `unit` in [0, 1).
    fn sample(&self, unit: f64) -> u64 {
        let scaled = unit * self.zeta_n;
        if scaled < 1.0 || self.n == 1 {
            return 0;
        }
        if scaled < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = self.n as f64 * (self.eta * unit - self.eta + 1.0).powf(self.alpha);
        (rank as u64).min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_one_width_and_stay_in_range() {
        let mut chooser = Workload::new(1000, 0.0, None).chooser(0);
        assert_eq!(chooser.key(0), b"key:000");
        assert_eq!(chooser.key(42), b"key:042");
        assert_eq!(chooser.key(999), b"key:999");
        assert_eq!(Workload::new(1, 0.0, None).chooser(0).key(0), b"key:0");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let (op, key) = chooser.next();
            assert_eq!(op, Op::Set);
            assert_eq!(key.len(), 7);
            seen.insert(key.to_vec());
        }
        assert!(
            seen.len() > 990,
            "uniform over 1000 keys saw {}",
            seen.len()
        );
    }

    #[test]
    fn the_read_ratio_sets_the_mix() {
        let mut chooser = Workload::new(10, 0.9, None).chooser(3);
        let gets = (0..100_000).filter(|_| chooser.next().0 == Op::Get).count();
        assert!((89_000..=91_000).contains(&gets), "{gets} GETs of 100000");
        let mut reads_only = Workload::new(10, 1.0, None).chooser(1);
        assert!((0..1000).all(|_| reads_only.next().0 == Op::Get));
    }

    #[test]
    fn zipf_favours_the_first_keys() {
        let keys = 10_000;
        let zipf = Zipf::new(keys, 0.99);
        let mut rng = SplitMix64(1);
        let mut counts = vec![0u32; keys as usize];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.sample(rng.unit()) as usize] += 1;
        }
        // Under theta 0.99 over 10^4 keys, rank 0 has p = 1 / zeta(n) (about 0.1), the top 1 %
        // of keys about half of the draws.
        let top = f64::from(counts[0]) / f64::from(draws);
        let expected = 1.0 / zipf.zeta_n;
        assert!((top - expected).abs() < 0.01, "rank 0: {top} vs {expected}");
        let top_percent: u32 = counts[..100].iter().sum();
        assert!(top_percent > draws * 2 / 5, "top 1 %: {top_percent}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
    }
}
