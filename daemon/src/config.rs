//! The value syntaxes every daemon's configuration shares: sizes (`64MiB`) and CPU lists
//! (`0-3,6`, `all`). Each daemon wraps the reasons in its own typed error, naming the field.

/// Parses a size: bytes, or a number with `KiB`, `MiB`, `GiB` or `TiB` (case-insensitive,
/// `K`, `M`, `G`, `T` too; always binary). The error is the reason, for the caller's error.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err("expected a number of bytes, optionally with KiB, MiB, GiB or TiB".into());
    }
    let number: u64 = t[..digits_end]
        .parse()
        .map_err(|_| "the number is too large".to_string())?;
    let shift = match t[digits_end..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err("unknown unit: use KiB, MiB, GiB or TiB (binary)".into()),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| "the size overflows 64 bits".into())
}

/// Why a CPU list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoresError {
    /// It does not parse; the reason.
    Bad(String),
    /// A range names more CPUs than the daemon runs executors.
    TooMany {
        /// CPUs in the range.
        count: usize,
    },
}

/// Parses a CPU list: `all` (every CPU in `available`), or comma-separated CPUs and
/// ranges, no range longer than `cores_max`.
pub fn parse_cores(
    text: &str,
    available: &[usize],
    cores_max: usize,
) -> Result<Vec<usize>, CoresError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok(available.to_vec());
    }
    let mut out = Vec::new();
    for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| CoresError::Bad(format!("{s:?} is not a CPU number")))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(CoresError::Bad(format!("the range {part} runs backwards")));
                }
                if b - a >= cores_max {
                    return Err(CoresError::TooMany { count: b - a + 1 });
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpu_lists_parse_or_say_why_not() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 2 g "), Ok(2 << 30));
        assert_eq!(parse_size("17"), Ok(17));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3 XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("overflows"));
        assert_eq!(parse_cores("all", &[0, 1], 8), Ok(vec![0, 1]));
        assert_eq!(parse_cores("0-2, 5", &[], 8), Ok(vec![0, 1, 2, 5]));
        assert!(matches!(
            parse_cores("3-1", &[], 8),
            Err(CoresError::Bad(_))
        ));
        assert_eq!(
            parse_cores("0-9", &[], 8),
            Err(CoresError::TooMany { count: 10 })
        );
    }
}
