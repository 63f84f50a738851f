//! An invertible Bloom lookup table of message fingerprints ("IBLT": Goodrich & Mitzenmacher,
//! 2011; used for set difference by Eppstein, Goodrich, Uyeda & Varghese, "What's the
//! Difference?", SIGCOMM 2011), carried by every tally row so that the verifier can name the
//! messages one tier has and the other has not.
//!
//! Each message is added to `hashes` cells, one in each of `hashes` equal sub-tables, chosen from
//! its fingerprint. A cell holds a signed count and *additive* (wrapping) sums: of fingerprints,
//! of a check hash of each fingerprint, and of each message's locator (partition, offset + 1) with
//! a check hash of fingerprint and locator. Sums, not XOR, so two copies of one message do not
//! cancel: a duplicate is a count of 2 where the upstream tier has 1.
//!
//! * **Merge** is cell-wise addition: commutative and associative, the empty sketch its identity.
//!   A row is an agent's *cumulative* tally of its bucket, so the store keeps each agent's latest
//!   row and the verifier sums agents: a row delivered twice replaces itself, as the counts do.
//! * **Difference** `upstream − downstream` holds exactly the messages one tier has more copies of
//!   than the other: positive counts lost (or not yet arrived), negative extra copies.
//! * **Decoding** peels it: a cell holding one message, `k` copies of it (`count = ±k`), gives
//!   the fingerprint `x` with `k·x = ±fp_sum`, accepted only if `k·check(x) = ±chk_sum` and the cell
//!   is one of `x`'s cells; the message is then taken out of all its cells, which may leave others
//!   pure. Peeling ends when no cell is pure: the difference was decoded in full when every cell is
//!   empty, otherwise the messages found so far are listed and the rest are not.
//! * **Locators** are reported only for a single copy (`count = ±1`) whose locator sums pass their
//!   check hash. Where two tiers record one message at different locators (tiers on different
//!   clusters), the message cancels in count and fingerprint but its locators do not: a cell it
//!   shares with a named message fails that check, and the message is named without a locator —
//!   never with a wrong one.
//!
//! **False decodes.** A cell that holds several messages passes as pure only if a 64-bit check
//! hash of some candidate matches the cell's check sum by chance, and its cell indices happen to
//! include the cell: probability about 2⁻⁶⁴ per test (up to 16 candidates each). Peeling tests each
//! cell a handful of times, so a table of `n` cells names a wrong message with probability below
//! `n · 2⁻⁵⁵` per decode — about 10⁻¹⁴ for the default table.

use std::fmt;

/// How big a sketch is: `cells` in all, in `hashes` sub-tables of `cells / hashes` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    pub cells: u16,
    pub hashes: u8,
}

/// The default sketch: 80 cells, 4 hashes (3,204 bytes a row). Measured by
/// `cargo run --release -p kaudit-schema --example difference_rates` (5,000 random differences
/// each): decodes every message of a difference of 20 in 99.9 % of buckets, 30 in 99.8 %, 40 in
/// 99.4 %, 50 in 98 %, 64 in 4 %; past that it names some and says it could not name all.
pub const DEFAULT_GEOMETRY: Geometry = Geometry { cells: 80, hashes: 4 };

/// The sketch's serialised format.
const FORMAT_VERSION: u8 = 1;
/// Serialised bytes per cell.
const CELL_BYTES: usize = 40;
/// Bytes before the cells: version, hashes, cells.
const HEADER_BYTES: usize = 4;

/// A geometry or a serialised sketch is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DifferenceError {
    #[error("sketch geometry: hashes must be 3 to 8, got {0}")]
    Hashes(u8),
    #[error(
        "sketch geometry: cells must be a multiple of hashes ({hashes}), at least twice it and at most 4096, got {cells}"
    )]
    Cells { cells: u16, hashes: u8 },
    #[error("sketch bytes: {0}")]
    Corrupt(String),
    #[error("sketches of different geometries ({0:?} and {1:?}) cannot be combined")]
    Mismatch(Geometry, Geometry),
}

impl Geometry {
    /// The geometry, if usable.
    pub fn checked(self) -> Result<Self, DifferenceError> {
        let Geometry { cells, hashes } = self;
        if !(3..=8).contains(&hashes) {
            return Err(DifferenceError::Hashes(hashes));
        }
        let h = u16::from(hashes);
        if cells % h != 0 || cells < 2 * h || cells > 4096 {
            return Err(DifferenceError::Cells { cells, hashes });
        }
        Ok(self)
    }

    /// Bytes of a serialised sketch of this geometry.
    pub fn bytes(self) -> usize {
        HEADER_BYTES + CELL_BYTES * usize::from(self.cells)
    }

    /// The differences a bucket edge can have and still be named whole in all but about one
    /// bucket in a hundred: a quarter of the cells (the default's 20 measured 99.9 %, 64 cells'
    /// 16 over 99.5 %, 48 cells' 12 about 99 %). More differences are often named too; when they
    /// are not, the decoder says so.
    pub fn capacity(self) -> usize {
        usize::from(self.cells) / 4
    }

    fn sub_table(self) -> usize {
        usize::from(self.cells) / usize::from(self.hashes)
    }
}

/// Where a message lives in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Locator {
    pub partition: i32,
    pub offset: i64,
}

/// One cell: a signed count and wrapping sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: i32,
    /// Sum of partitions.
    part_sum: u32,
    fp_sum: u64,
    /// Sum of `check(fp)`.
    chk_sum: u64,
    /// Sum of `offset + 1` (0: no locator).
    off_sum: u64,
    /// Sum of `locator_check(fp, locator)`.
    loc_sum: u64,
}

impl Cell {
    #[inline(always)]
    fn add(&mut self, sign: i32, fp: u64, chk: u64, part: u32, off: u64, loc: u64) {
        let s = sign as i64 as u64;
        self.count = self.count.wrapping_add(sign);
        self.part_sum = self.part_sum.wrapping_add((sign as u32).wrapping_mul(part));
        self.fp_sum = self.fp_sum.wrapping_add(s.wrapping_mul(fp));
        self.chk_sum = self.chk_sum.wrapping_add(s.wrapping_mul(chk));
        self.off_sum = self.off_sum.wrapping_add(s.wrapping_mul(off));
        self.loc_sum = self.loc_sum.wrapping_add(s.wrapping_mul(loc));
    }

    fn combine(&mut self, o: &Cell, sign: i64) {
        let s = sign as u64;
        self.count = self.count.wrapping_add((sign as i32).wrapping_mul(o.count));
        self.part_sum = self.part_sum.wrapping_add((sign as u32).wrapping_mul(o.part_sum));
        self.fp_sum = self.fp_sum.wrapping_add(s.wrapping_mul(o.fp_sum));
        self.chk_sum = self.chk_sum.wrapping_add(s.wrapping_mul(o.chk_sum));
        self.off_sum = self.off_sum.wrapping_add(s.wrapping_mul(o.off_sum));
        self.loc_sum = self.loc_sum.wrapping_add(s.wrapping_mul(o.loc_sum));
    }

    fn is_empty(&self) -> bool {
        self.count == 0 && self.fp_sum == 0 && self.chk_sum == 0
    }
}

/// Odd multipliers choosing a fingerprint's cell in each sub-table.
const SEEDS: [u64; 8] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0xD6E8_FEB8_6659_FD93,
    0xFF51_AFD7_ED55_8CCD,
    0xC4CE_B9FE_1A85_EC53,
    0x8CB9_2BA7_2F3D_8DD7,
    0xA076_1D64_78BD_642F,
];

/// SplitMix64's finaliser: a strong 64-bit mix.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The check hash of a fingerprint.
#[inline(always)]
fn check(fp: u64) -> u64 {
    mix(fp ^ 0x5851_F42D_4C95_7F2D)
}

/// The check hash of a fingerprint at a locator.
#[inline(always)]
fn locator_check(fp: u64, part: u32, off: u64) -> u64 {
    // Partition and offset mixed apart: no (partition, offset) pair can stand for another.
    mix(fp.rotate_left(17) ^ mix(mix(off ^ 0x2545_F491_4F6C_DD1D) ^ u64::from(part)))
}

/// The cell of `fp` in sub-table `i` of `sub` cells, as an index into the whole table.
#[inline(always)]
fn cell_of(fp: u64, i: usize, sub: usize) -> usize {
    let h = fp.wrapping_mul(SEEDS[i]) >> 32;
    i * sub + ((h * sub as u64) >> 32) as usize
}

/// An invertible sketch of the messages one agent counted in one bucket (or of a merge of such).
#[derive(Clone, PartialEq, Eq)]
pub struct DifferenceSketch {
    geometry: Geometry,
    cells: Box<[Cell]>,
}

impl fmt::Debug for DifferenceSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.cells.iter().filter(|c| !c.is_empty()).count();
        write!(f, "DifferenceSketch({}x{}, {used} cells used)", self.geometry.cells, self.geometry.hashes)
    }
}

/// One message one tier has more copies of than the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    pub fingerprint: u64,
    /// Positive: copies the upstream tier has and the downstream has not (lost); negative: extra
    /// copies downstream (duplicates, or messages upstream never counted).
    pub copies: i64,
    /// Where the message lives, when its tiers recorded it and it could be verified.
    pub locator: Option<Locator>,
}

/// What decoding a difference found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Each verified difference, in the order found.
    pub differences: Vec<Difference>,
    /// Every difference was named; `false`: more differences than the table could name, and
    /// `differences` is a correct part of them.
    pub complete: bool,
}

impl DifferenceSketch {
    /// An empty sketch. `geometry` must be [`Geometry::checked`].
    pub fn new(geometry: Geometry) -> Self {
        debug_assert!(geometry.checked().is_ok(), "{geometry:?}");
        Self { geometry, cells: vec![Cell::default(); usize::from(geometry.cells)].into_boxed_slice() }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Add one message: its fingerprint and, where the tier knows it, where it lives.
    #[inline]
    pub fn insert(&mut self, fp: u64, locator: Option<Locator>) {
        self.add(1, fp, locator);
    }

    #[inline(always)]
    fn add(&mut self, sign: i32, fp: u64, locator: Option<Locator>) {
        let chk = check(fp);
        let (part, off, loc) = match locator {
            Some(l) => {
                let (part, off) = (l.partition as u32, (l.offset as u64).wrapping_add(1));
                (part, off, locator_check(fp, part, off))
            }
            None => (0, 0, 0),
        };
        let sub = self.geometry.sub_table();
        for i in 0..usize::from(self.geometry.hashes) {
            self.cells[cell_of(fp, i, sub)].add(sign, fp, chk, part, off, loc);
        }
    }

    /// Fold `other` in (cell-wise addition): the sketch of both multisets.
    pub fn merge(&mut self, other: &DifferenceSketch) -> Result<(), DifferenceError> {
        self.combine(other, 1)
    }

    /// `self − other`: the messages `self` has more copies of count positive, those `other` has
    /// more of negative.
    pub fn subtract(&self, other: &DifferenceSketch) -> Result<DifferenceSketch, DifferenceError> {
        let mut out = self.clone();
        out.combine(other, -1)?;
        Ok(out)
    }

    fn combine(&mut self, other: &DifferenceSketch, sign: i64) -> Result<(), DifferenceError> {
        if self.geometry != other.geometry {
            return Err(DifferenceError::Mismatch(self.geometry, other.geometry));
        }
        self.cells.iter_mut().zip(other.cells.iter()).for_each(|(a, b)| a.combine(b, sign));
        Ok(())
    }

    /// Nothing in it (or, for a difference, the two sides agree).
    pub fn is_empty(&self) -> bool {
        self.cells.iter().all(Cell::is_empty)
    }

    /// The sketch as stored: format version, hashes, cells (u16), then each cell, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.geometry.bytes());
        out.push(FORMAT_VERSION);
        out.push(self.geometry.hashes);
        out.extend_from_slice(&self.geometry.cells.to_le_bytes());
        for c in self.cells.iter() {
            out.extend_from_slice(&c.count.to_le_bytes());
            out.extend_from_slice(&c.part_sum.to_le_bytes());
            for v in [c.fp_sum, c.chk_sum, c.off_sum, c.loc_sum] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// A sketch from [`Self::to_bytes`]; a clear error for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DifferenceError> {
        let corrupt = |what: String| DifferenceError::Corrupt(what);
        let [version, hashes, c0, c1, cells @ ..] = bytes else {
            return Err(corrupt(format!("{} bytes, shorter than the header", bytes.len())));
        };
        if *version != FORMAT_VERSION {
            return Err(corrupt(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let geometry = Geometry { cells: u16::from_le_bytes([*c0, *c1]), hashes: *hashes }
            .checked()
            .map_err(|e| corrupt(e.to_string()))?;
        if cells.len() != CELL_BYTES * usize::from(geometry.cells) {
            return Err(corrupt(format!("{} bytes of cells for {} cells", cells.len(), geometry.cells)));
        }
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let cells = cells
            .chunks_exact(CELL_BYTES)
            .map(|b| Cell {
                count: i32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
                part_sum: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
                fp_sum: word(&b[8..16]),
                chk_sum: word(&b[16..24]),
                off_sum: word(&b[24..32]),
                loc_sum: word(&b[32..40]),
            })
            .collect();
        Ok(Self { geometry, cells })
    }

    /// Peel a difference (see the module doc). Never names a message that is not one of the
    /// differences (but for the false-decode probability stated there).
    pub fn decode(&self) -> Decoded {
        let mut t = self.clone();
        let mut differences = Vec::new();
        let mut queue: Vec<usize> = (0..t.cells.len()).collect();
        let budget = 4 * t.cells.len();
        while let Some(i) = queue.pop() {
            let Some(found) = t.pure(i) else { continue };
            t.remove(&found);
            differences.push(found);
            if differences.len() > budget {
                break; // cannot happen with a true difference; a bound on a corrupt one
            }
            let sub = t.geometry.sub_table();
            queue.extend((0..usize::from(t.geometry.hashes)).map(|h| cell_of(found.fingerprint, h, sub)));
        }
        let complete = t.is_empty();
        Decoded { differences, complete }
    }

    /// The one message (with its copies) cell `i` holds, if it holds exactly one, verified.
    fn pure(&self, i: usize) -> Option<Difference> {
        let c = self.cells[i];
        if c.count == 0 {
            return None;
        }
        let (sign, k) = if c.count > 0 { (1u64, c.count as u64) } else { (u64::MAX, c.count.unsigned_abs() as u64) };
        let (fp_sum, chk_sum) = (c.fp_sum.wrapping_mul(sign), c.chk_sum.wrapping_mul(sign));
        let twos = k.trailing_zeros();
        if twos > 4 {
            return None;
        }
        let odd = k >> twos;
        let reduced = fp_sum.wrapping_mul(inverse(odd));
        if reduced & ((1u64 << twos) - 1) != 0 {
            return None;
        }
        let sub = self.geometry.sub_table();
        let table = i / sub;
        let candidates = (0..1u64 << twos).map(|j| (reduced >> twos) | if twos == 0 { 0 } else { j << (64 - twos) });
        let mut candidates = candidates;
        let fingerprint = candidates.find(|x| k.wrapping_mul(check(*x)) == chk_sum && cell_of(*x, table, sub) == i)?;
        let locator = (k == 1).then(|| self.locator(c, sign, fingerprint)).flatten();
        Some(Difference { fingerprint, copies: if sign == 1 { k as i64 } else { -(k as i64) }, locator })
    }

    /// The locator of the single copy of `fp` in cell `c`, if its sums verify.
    fn locator(&self, c: Cell, sign: u64, fp: u64) -> Option<Locator> {
        let part = c.part_sum.wrapping_mul(sign as u32);
        let off = c.off_sum.wrapping_mul(sign);
        let loc = c.loc_sum.wrapping_mul(sign);
        (off != 0 && loc == locator_check(fp, part, off))
            .then(|| Locator { partition: part as i32, offset: off.wrapping_sub(1) as i64 })
    }

    /// Take `d` out of every cell it is in (its locator only where verified).
    /// Every cell is linear in its count, so all copies go in one step, however many.
    fn remove(&mut self, d: &Difference) {
        self.add((d.copies as i32).wrapping_neg(), d.fingerprint, d.locator);
    }
}

impl serde::Serialize for DifferenceSketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for DifferenceSketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// The inverse of odd `a` modulo 2⁶⁴ (Newton's iteration).
fn inverse(a: u64) -> u64 {
    let mut x = a; // correct to 3 bits for odd a
    for _ in 0..5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

#[cfg(test)]
mod tests;
