//! The one duration grammar gbo uses everywhere (`30m`, `12h`, `7d`, `4w`), and its translation to LXD's
//! `snapshots.expiry` grammar, where `M` means minutes and `m` means months.

use std::fmt;
use std::str::FromStr;

/// The longest span accepted: 100 years (36,525 days).
const MAX_SECONDS: u64 = 36_525 * 86_400;

/// A span of time written `<n><unit>`: `m` minutes, `h` hours, `d` days, `w` weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    amount: u32,
    unit: SpanUnit,
}

/// The units of [`Span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpanUnit {
    /// `m`: minutes.
    Minutes,
    /// `h`: hours.
    Hours,
    /// `d`: days.
    Days,
    /// `w`: weeks.
    Weeks,
}

/// A duration that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{value}`: {reason}; write a positive number and one unit: `30m` (minutes), `12h` (hours), `7d` (days) or `4w` (weeks)")]
pub struct SpanError {
    /// What was given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Span {
    /// `amount` of `unit`; `None` when `amount` is 0.
    pub fn new(amount: u32, unit: SpanUnit) -> Option<Self> {
        (amount > 0).then_some(Self { amount, unit })
    }

    /// The number of units.
    pub fn amount(&self) -> u32 {
        self.amount
    }

    /// The unit.
    pub fn unit(&self) -> SpanUnit {
        self.unit
    }

    /// Length in seconds.
    pub fn seconds(&self) -> u64 {
        let per = match self.unit {
            SpanUnit::Minutes => 60,
            SpanUnit::Hours => 3_600,
            SpanUnit::Days => 86_400,
            SpanUnit::Weeks => 604_800,
        };
        u64::from(self.amount) * per
    }

    /// As a `std::time::Duration`.
    pub fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds())
    }

    /// As a `time::Duration`.
    pub fn as_time(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.seconds()).unwrap_or(i64::MAX))
    }

    /// The same span in LXD's `snapshots.expiry` grammar (`M` minutes, `H` hours, `d` days, `w` weeks; LXD reads a
    /// lower-case `m` as months, so `30m` here must become `30M` there).
    pub fn to_lxd_expiry(&self) -> String {
        let unit = match self.unit {
            SpanUnit::Minutes => 'M',
            SpanUnit::Hours => 'H',
            SpanUnit::Days => 'd',
            SpanUnit::Weeks => 'w',
        };
        format!("{}{unit}", self.amount)
    }
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| SpanError { value: value.to_string(), reason };
        let trimmed = value.trim();
        let Some(last) = trimmed.chars().last() else { return Err(err("it is empty")) };
        let unit = match last {
            'm' => SpanUnit::Minutes,
            'h' => SpanUnit::Hours,
            'd' => SpanUnit::Days,
            'w' => SpanUnit::Weeks,
            'M' => {
                return Err(err(
                    "`M` is ambiguous (LXD reads it as minutes, cron tools as months); use `m` for minutes",
                ))
            }
            c if c.is_ascii_digit() => return Err(err("the unit is missing")),
            _ => return Err(err("the unit is not one of m, h, d, w")),
        };
        let digits = &trimmed[..trimmed.len() - 1];
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(err("the amount is not a whole number"));
        }
        let amount: u32 = digits.parse().map_err(|_| err("the amount is too large"))?;
        let span = Span::new(amount, unit).ok_or_else(|| err("the amount must be greater than 0"))?;
        if span.seconds() > MAX_SECONDS {
            // Beyond the calendar's range an expiry or a cutoff cannot even be computed.
            return Err(err("it is longer than 100 years"));
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            SpanUnit::Minutes => 'm',
            SpanUnit::Hours => 'h',
            SpanUnit::Days => 'd',
            SpanUnit::Weeks => 'w',
        };
        write!(f, "{}{unit}", self.amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_one_grammar() {
        assert_eq!("30m".parse::<Span>().map(|s| s.seconds()), Ok(1800));
        assert_eq!("12h".parse::<Span>().map(|s| s.seconds()), Ok(43_200));
        assert_eq!("7d".parse::<Span>().map(|s| s.seconds()), Ok(604_800));
        assert_eq!("4w".parse::<Span>().map(|s| s.seconds()), Ok(2_419_200));
        assert_eq!("7d".parse::<Span>().map(|s| s.to_string()), Ok("7d".to_string()));
        for bad in ["", "7", "d", "0d", "-1d", "1.5h", "7y", "7M", "1 d x", "99999999999d"] {
            let err = bad.parse::<Span>().expect_err(bad);
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
            assert!(err.to_string().contains("`30m` (minutes)"), "{err}");
        }
    }

    #[test]
    fn translates_to_lxd_expiry_where_m_is_months() {
        let cases = [("30m", "30M"), ("12h", "12H"), ("7d", "7d"), ("4w", "4w")];
        for (ours, lxd) in cases {
            assert_eq!(ours.parse::<Span>().map(|s| s.to_lxd_expiry()), Ok(lxd.to_string()), "{ours}");
        }
    }
}
