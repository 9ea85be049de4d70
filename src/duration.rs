//! Go `time.Duration` on the wire: the design document's Go client encodes it as integer
//! nanoseconds, while Kubernetes objects (metav1.Duration) carry strings such as "1.5s".
//! [`GoDuration`] accepts both and writes the string form; [`nanos`] writes nanoseconds.
//! [`parse_duration`] reads the durations of flags, [`parse_moment`] their moments.

use std::fmt;

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration as a flag or an environment variable gives it: humantime's forms (`500ms`, `30s`,
/// `24h`, `400days`), or `0`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 24h)"))
}

/// A moment as a flag gives it (`--since`, `--until`): RFC 3339 (`2026-11-01T00:00:00Z`), a
/// date (`2026-11-01`, its midnight UTC), or a duration back from now (`7d`, `36h`, `7d ago`).
pub fn parse_moment(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    moment_at(s, chrono::Utc::now())
}

/// [`parse_moment`] with `now` given.
pub fn moment_at(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    let back = s.strip_suffix("ago").map_or(s, str::trim_end);
    let refuse = || format!("{s:?} is not a moment (examples: 2026-11-01T00:00:00Z, 2026-11-01, 7d, 36h ago)");
    let d = humantime::parse_duration(back).map_err(|_| refuse())?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(refuse)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration {
    pub nanos: i64,
}

const NS: i64 = 1;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid Go duration {input:?}: {reason}")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl GoDuration {
    pub fn from_nanos(nanos: i64) -> Self {
        Self { nanos }
    }

    pub fn from_std(d: std::time::Duration) -> Self {
        Self {
            nanos: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    pub fn between(start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            nanos: (end - start).num_nanoseconds().unwrap_or(i64::MAX),
        }
    }

    pub fn as_secs_f64(&self) -> f64 {
        self.nanos as f64 / S as f64
    }

    /// Parses Go's `time.ParseDuration` syntax: "300ms", "1.5h", "2h45m", "-1.5s", "0".
    pub fn parse(input: &str) -> Result<Self, ParseDurationError> {
        let err = |reason| ParseDurationError {
            input: input.to_string(),
            reason,
        };
        let (neg, mut rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        if rest == "0" {
            return Ok(Self::default());
        }
        if rest.is_empty() {
            return Err(err("empty"));
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let number = &rest[..num_end];
            if number.is_empty() || number == "." {
                return Err(err("expected a number"));
            }
            rest = &rest[num_end..];
            let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let unit = match &rest[..unit_end] {
                "ns" => NS,
                "us" | "µs" | "μs" => US,
                "ms" => MS,
                "s" => S,
                "m" => M,
                "h" => H,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_end..];
            let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
            if frac_part.contains('.') {
                return Err(err("malformed number"));
            }
            let int: i128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err("number too large"))?
            };
            let mut value = int.checked_mul(unit as i128).ok_or_else(|| err("overflow"))?;
            // Fractions are scaled exactly in integers, as Go does, to avoid float rounding.
            let mut scale = unit as i128;
            for digit in frac_part.bytes().take(18) {
                scale /= 10;
                value += (digit - b'0') as i128 * scale;
            }
            total = total.checked_add(value).ok_or_else(|| err("overflow"))?;
            if total > i64::MAX as i128 {
                return Err(err("overflow"));
            }
        }
        let nanos = total as i64;
        Ok(Self {
            nanos: if neg { -nanos } else { nanos },
        })
    }

    /// Go's `Duration.String()`: "1.5s", "3m0s", "2h45m0s", "300ms", "0s".
    pub fn to_go_string(&self) -> String {
        if self.nanos == 0 {
            return "0s".into();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let u = self.nanos.unsigned_abs();
        if u < S as u64 {
            let (unit, div) = if u < US as u64 {
                ("ns", 1u64)
            } else if u < MS as u64 {
                ("µs", US as u64)
            } else {
                ("ms", MS as u64)
            };
            return format!("{sign}{}{unit}", fraction(u, div));
        }
        let h = u / H as u64;
        let m = (u % H as u64) / M as u64;
        let s = u % M as u64;
        let mut out = String::from(sign);
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", fraction(s, S as u64)));
        out
    }

    /// ISO 8601 ("PT1.5S", "PT3M"), which PostgreSQL's `::interval` reads exactly.
    pub fn to_iso8601(&self) -> String {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let u = self.nanos.unsigned_abs();
        let h = u / H as u64;
        let m = (u % H as u64) / M as u64;
        let s = u % M as u64;
        let mut out = format!("{sign}PT");
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 || (h == 0 && m == 0) {
            out.push_str(&format!("{}S", fraction(s, S as u64)));
        }
        out
    }
}

/// `value / div` as a decimal without trailing zeros.
fn fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let rem = value % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let frac = format!("{rem:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_go_string())
    }
}

impl Serialize for GoDuration {
    fn serialize<S2: Serializer>(&self, s: S2) -> Result<S2::Ok, S2::Error> {
        s.serialize_str(&self.to_go_string())
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("integer nanoseconds or a Go duration string such as \"1.5s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                Ok(GoDuration::from_nanos(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                i64::try_from(v)
                    .map(GoDuration::from_nanos)
                    .map_err(|_| E::custom("duration overflows int64 nanoseconds"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoDuration, E> {
                if v.fract() == 0.0 && v.abs() < i64::MAX as f64 {
                    Ok(GoDuration::from_nanos(v as i64))
                } else {
                    Err(E::custom("duration in nanoseconds must be a whole number"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The structural schema of a Go duration field in a CRD (used with `schema_with`).
pub fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A Go duration: integer nanoseconds or a string such as \"1.5s\".",
        "x-kubernetes-int-or-string": true
    })
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Go duration: integer nanoseconds or a string such as \"1.5s\".",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{ "type": "integer" }, { "type": "string" }]
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

/// `#[serde(with = "duration::nanos")]`: integer nanoseconds out, either form in.
pub mod nanos {
    use super::GoDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<GoDuration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_i64(d.nanos),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GoDuration>, D::Error> {
        Option::<GoDuration>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_rfc3339_dates_or_durations_back_from_now() {
        let now: chrono::DateTime<chrono::Utc> = "2026-12-07T12:30:00Z".parse().unwrap();
        let at = |s: &str| moment_at(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2026-11-01T08:00:00+01:00").unwrap(), "2026-11-01T07:00:00+00:00");
        assert_eq!(at("2026-11-01").unwrap(), "2026-11-01T00:00:00+00:00");
        assert_eq!(at("7d").unwrap(), "2026-11-30T12:30:00+00:00");
        assert_eq!(at("36h ago").unwrap(), "2026-12-06T00:30:00+00:00");
        assert_eq!(at(" 90min ").unwrap(), "2026-12-07T11:00:00+00:00");
        for bad in ["", "yesterday", "2026-13-01", "2026", "-7d", "1000000000y"] {
            assert!(at(bad).is_err(), "{bad:?} was taken as a moment");
        }
    }

    #[test]
    fn parses_go_syntax() {
        for (s, n) in [
            ("0", 0),
            ("1.5s", 1_500_000_000),
            ("300ms", 300 * MS),
            ("2h45m", 2 * H + 45 * M),
            ("-1.5h", -(H + 30 * M)),
            ("1µs", US),
            ("1us", US),
            ("3m0s", 3 * M),
            (".5s", 500 * MS),
            ("1.000000001s", S + 1),
        ] {
            assert_eq!(GoDuration::parse(s), Ok(GoDuration::from_nanos(n)), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "1", "s", "1x", "1.2.3s", "-", "99999999999999999999h"] {
            assert!(GoDuration::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn formats_like_go_and_iso() {
        let cases = [
            (0, "0s", "PT0S"),
            (1_500_000_000, "1.5s", "PT1.5S"),
            (3 * M, "3m0s", "PT3M"),
            (2 * H + 45 * M + 500 * MS, "2h45m0.5s", "PT2H45M0.5S"),
            (300 * MS, "300ms", "PT0.3S"),
        ];
        for (n, go, iso) in cases {
            let d = GoDuration::from_nanos(n);
            assert_eq!(d.to_go_string(), go);
            assert_eq!(d.to_iso8601(), iso);
            assert_eq!(GoDuration::parse(go), Ok(d));
        }
    }

    #[test]
    fn deserializes_both_wire_forms() {
        let a: GoDuration = serde_json::from_str("1500000000").unwrap();
        let b: GoDuration = serde_json::from_str("\"1.5s\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<GoDuration>("true").is_err());
        assert!(serde_json::from_str::<GoDuration>("1.5").is_err());
    }
}
