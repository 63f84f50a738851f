//! A [`Detector`] at rest: a versioned binary encoding that gives back exactly the detector that
//! was written (every `f64` by its bits), so a restored detector takes the very same steps as one
//! that never stopped. JSON would do for the shape, but its float parsing may differ in the last
//! bit, and one bit is enough for a CUSUM to alarm one bucket apart.
//!
//! Format 1, little-endian: `upper`, `lower` (f64), `capacity`, `min_samples` (u64), `sigma_floor`
//! (f64), then the window and the held values, each as a u32 count followed by that many f64s.

use super::{Cusum, Detector};

/// The format [`Detector::to_bytes`] writes.
pub const DETECTOR_FORMAT: u32 = 1;

/// A stored detector that cannot be taken up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by a newer (or unknown) version of the verifier.
    #[error("unknown detector format {0}")]
    Format(u32),
    /// Cut short, too long, or with values no detector holds.
    #[error("malformed detector state: {0}")]
    Malformed(&'static str),
}

impl Detector {
    /// The detector, encoded in [`DETECTOR_FORMAT`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 8 * (self.window.len() + self.held.len()));
        for x in [self.cusum.upper, self.cusum.lower] {
            out.extend(x.to_bits().to_le_bytes());
        }
        out.extend((self.capacity as u64).to_le_bytes());
        out.extend((self.min_samples as u64).to_le_bytes());
        out.extend(self.sigma_floor.to_bits().to_le_bytes());
        for values in [&self.window, &self.held] {
            out.extend((values.len() as u32).to_le_bytes());
            values.iter().for_each(|x| out.extend(x.to_bits().to_le_bytes()));
        }
        out
    }

    /// The detector `bytes` encode in `format`.
    pub fn from_bytes(format: u32, bytes: &[u8]) -> Result<Self, DecodeError> {
        if format != DETECTOR_FORMAT {
            return Err(DecodeError::Format(format));
        }
        let mut r = Reader(bytes);
        let cusum = Cusum { upper: r.f64()?, lower: r.f64()? };
        let capacity = usize::try_from(r.u64()?).map_err(|_| DecodeError::Malformed("capacity"))?;
        let min_samples = usize::try_from(r.u64()?).map_err(|_| DecodeError::Malformed("min_samples"))?;
        let sigma_floor = r.f64()?;
        let window = r.values(capacity)?;
        let held = r.values(capacity)?;
        if !r.0.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes"));
        }
        if capacity == 0 || !(cusum.upper >= 0.0 && cusum.lower >= 0.0) {
            return Err(DecodeError::Malformed("statistics or capacity out of range"));
        }
        Ok(Self { cusum, window, held, capacity, min_samples, sigma_floor })
    }

    /// Whether the detector was made by `Detector::new(window, min_samples, sigma_floor)`: a
    /// stored one made under other settings is learned again rather than kept.
    pub fn has_settings(&self, window: usize, min_samples: usize, sigma_floor: f64) -> bool {
        self.capacity == window.max(1) && self.min_samples == min_samples && self.sigma_floor == sigma_floor
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(DecodeError::Malformed("cut short"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// A count, at most `capacity`, then that many values.
    fn values(&mut self, capacity: usize) -> Result<std::collections::VecDeque<f64>, DecodeError> {
        let n = u32::from_le_bytes(self.take()?) as usize;
        if n > capacity {
            return Err(DecodeError::Malformed("more values than the window holds"));
        }
        (0..n).map(|_| self.f64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cusum::CusumParams;

    /// A detector part-way through an excursion, with window and held values.
    fn busy() -> Detector {
        let mut d = Detector::new(16, 8, 0.01);
        let p = CusumParams::default();
        for i in 0..30 {
            d.observe(f64::from(i % 5) * 0.1, p);
        }
        d.observe(0.7, p);
        assert!(d.cusum.upper > 0.0 && !d.held.is_empty(), "the test needs an excursion under way");
        d
    }

    /// Invariant: a detector taken from its bytes takes exactly the steps the original takes.
    #[test]
    fn a_decoded_detector_continues_bit_for_bit() {
        let mut original = busy();
        let mut restored = Detector::from_bytes(DETECTOR_FORMAT, &original.to_bytes()).unwrap();
        assert_eq!(restored.to_bytes(), original.to_bytes());
        let p = CusumParams::default();
        for i in 0..200 {
            let x = f64::from((i * 7919) % 13) * 0.0737;
            let (a, b) = (original.observe(x, p), restored.observe(x, p));
            assert_eq!(
                (a.z.to_bits(), a.statistic.to_bits(), a.alarm),
                (b.z.to_bits(), b.statistic.to_bits(), b.alarm)
            );
        }
        assert!(restored.has_settings(16, 8, 0.01));
        assert!(!restored.has_settings(32, 8, 0.01) && !restored.has_settings(16, 4, 0.01));
    }

    #[test]
    fn unknown_formats_and_damaged_bytes_are_refused() {
        let bytes = busy().to_bytes();
        assert_eq!(Detector::from_bytes(2, &bytes).unwrap_err(), DecodeError::Format(2));
        let cut = Detector::from_bytes(DETECTOR_FORMAT, &bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(cut, DecodeError::Malformed("cut short"));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Detector::from_bytes(DETECTOR_FORMAT, &long).unwrap_err(), DecodeError::Malformed("trailing bytes"));
        let mut too_many = bytes;
        too_many[40..44].copy_from_slice(&17u32.to_le_bytes()); // the window's count, past capacity 16
        assert!(matches!(Detector::from_bytes(DETECTOR_FORMAT, &too_many), Err(DecodeError::Malformed(_))));
        assert!(Detector::from_bytes(DETECTOR_FORMAT, &[]).is_err());
    }
}
