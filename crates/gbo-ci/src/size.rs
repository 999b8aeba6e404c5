//! Byte sizes as people write them: `512`, `500M`, `20G`, `1.5GiB`, `10GB`.
//!
//! `K`, `M`, `G`, `T` and `KiB`..`TiB` are powers of 1024 (what `du -h` and sccache's `SCCACHE_CACHE_SIZE` mean);
//! `KB`, `MB`, `GB`, `TB` are powers of 1000.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let bad = || Error::invalid("size", value, "a number with an optional unit: 512, 500M, 20G, 1.5GiB, 10GB");
        let text = value.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let bytes = number * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(formatter, "{} B", self.0)
        } else {
            write!(formatter, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("512".parse::<ByteSize>().expect("parse"), ByteSize(512));
        assert_eq!("500M".parse::<ByteSize>().expect("parse"), ByteSize(500 << 20));
        assert_eq!("20G".parse::<ByteSize>().expect("parse"), ByteSize(20 << 30));
        assert_eq!("1.5GiB".parse::<ByteSize>().expect("parse"), ByteSize(3 << 29));
        assert_eq!("10GB".parse::<ByteSize>().expect("parse"), ByteSize(10_000_000_000));
        for bad in ["", "G", "ten", "5X", "-1G", "1..2M"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_binary_units() {
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5 GiB");
    }
}
