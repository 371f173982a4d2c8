//! Version orderings: NVIDIA's dotted numbers (`570.26 < 570.86.10`), and
//! the package managers' own rules (dpkg's `verrevcmp`, rpm's `rpmvercmp`).

use std::cmp::Ordering;
use std::fmt;

/// A driver or toolkit version compared numerically per component; missing
/// components count as zero (`580 == 580.0.0`). It prints as written:
/// driver versions keep their zero padding (`570.124.06`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Dotted {
    parts: Vec<u32>,
    text: String,
}

impl PartialEq for Dotted {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Dotted {}

impl std::hash::Hash for Dotted {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Consistent with Eq: trailing zeros do not count.
        let end = self
            .parts
            .iter()
            .rposition(|&c| c != 0)
            .map_or(0, |p| p + 1);
        self.parts[..end].hash(state);
    }
}

impl Dotted {
    pub fn parse(text: &str) -> Option<Dotted> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        text.split('.')
            .map(|part| {
                if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    part.parse().ok()
                }
            })
            .collect::<Option<Vec<u32>>>()
            .map(|parts| Dotted {
                parts,
                text: text.to_string(),
            })
    }

    pub fn components(&self) -> &[u32] {
        &self.parts
    }

    /// The first component: a driver's branch, a toolkit's major.
    pub fn major(&self) -> u32 {
        self.parts.first().copied().unwrap_or(0)
    }

    pub fn minor(&self) -> u32 {
        self.parts.get(1).copied().unwrap_or(0)
    }
}

impl Ord for Dotted {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.parts.len().max(other.parts.len());
        for index in 0..len {
            let a = self.parts.get(index).copied().unwrap_or(0);
            let b = other.parts.get(index).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Dotted {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Dotted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Dotted> for String {
    fn from(version: Dotted) -> String {
        version.to_string()
    }
}

impl TryFrom<String> for Dotted {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Dotted::parse(&text).ok_or_else(|| format!("not a dotted version: {text:?}"))
    }
}

/// Upstream part of a package version: `1:535.247.01-1~deb12u1` -> `535.247.01`.
pub fn upstream(package_version: &str) -> &str {
    let without_epoch = package_version
        .split_once(':')
        .map_or(package_version, |(_, rest)| rest);
    without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(upstream, _)| upstream)
}

/// dpkg's version ordering (deb-version(7)): epoch, then upstream and
/// revision compared with `verrevcmp` (`~` sorts before everything).
pub fn dpkg_compare(a: &str, b: &str) -> Ordering {
    let (epoch_a, rest_a) = split_epoch(a);
    let (epoch_b, rest_b) = split_epoch(b);
    epoch_a.cmp(&epoch_b).then_with(|| {
        let (up_a, rev_a) = rest_a.rsplit_once('-').unwrap_or((rest_a, ""));
        let (up_b, rev_b) = rest_b.rsplit_once('-').unwrap_or((rest_b, ""));
        verrevcmp(up_a, up_b).then_with(|| verrevcmp(rev_a, rev_b))
    })
}

fn split_epoch(version: &str) -> (u64, &str) {
    match version.split_once(':') {
        Some((epoch, rest)) if epoch.bytes().all(|b| b.is_ascii_digit()) => {
            (epoch.parse().unwrap_or(0), rest)
        }
        _ => (0, version),
    }
}

fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = dpkg_order(a.get(i).copied());
            let bc = dpkg_order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// rpm's version ordering (`rpmvercmp`) on `[epoch:]version[-release]`.
pub fn rpm_compare(a: &str, b: &str) -> Ordering {
    let (epoch_a, rest_a) = split_epoch(a);
    let (epoch_b, rest_b) = split_epoch(b);
    epoch_a.cmp(&epoch_b).then_with(|| {
        let (ver_a, rel_a) = rest_a.rsplit_once('-').unwrap_or((rest_a, ""));
        let (ver_b, rel_b) = rest_b.rsplit_once('-').unwrap_or((rest_b, ""));
        rpmvercmp(ver_a, ver_b).then_with(|| rpmvercmp(rel_a, rel_b))
    })
}

/// rpm's caret: a^ sorts after a but before a.1; at the end of one side
/// the other's caret is newer. Equal: both have one, go on.
fn carets(caret_a: bool, caret_b: bool, a_ended: bool, b_ended: bool) -> Ordering {
    if a_ended {
        Ordering::Less
    } else if b_ended || !caret_a {
        Ordering::Greater
    } else if !caret_b {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

/// Two segments of the same kind: numbers by value (leading zeros
/// dropped, then length, then digits), letters byte by byte.
fn compare_segments(mut a: &[u8], mut b: &[u8], numeric: bool) -> Ordering {
    if numeric {
        while a.first() == Some(&b'0') {
            a = &a[1..];
        }
        while b.first() == Some(&b'0') {
            b = &b[1..];
        }
        match a.len().cmp(&b.len()) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
    }
    a.cmp(b)
}

fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        while i < a.len() && !a[i].is_ascii_alphanumeric() && a[i] != b'~' && a[i] != b'^' {
            i += 1;
        }
        while j < b.len() && !b[j].is_ascii_alphanumeric() && b[j] != b'~' && b[j] != b'^' {
            j += 1;
        }
        let (tilde_a, tilde_b) = (a.get(i) == Some(&b'~'), b.get(j) == Some(&b'~'));
        if tilde_a || tilde_b {
            if !tilde_a {
                return Ordering::Greater;
            }
            if !tilde_b {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (caret_a, caret_b) = (a.get(i) == Some(&b'^'), b.get(j) == Some(&b'^'));
        if caret_a || caret_b {
            match carets(caret_a, caret_b, i >= a.len(), j >= b.len()) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
            i += 1;
            j += 1;
            continue;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let take = |s: &[u8], mut k: usize| {
            let start = k;
            while k < s.len()
                && (if numeric {
                    s[k].is_ascii_digit()
                } else {
                    s[k].is_ascii_alphabetic()
                })
            {
                k += 1;
            }
            (start, k)
        };
        let (start_a, end_a) = take(a, i);
        let (start_b, end_b) = take(b, j);
        if start_b == end_b {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        match compare_segments(&a[start_a..end_a], &b[start_b..end_b], numeric) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        i = end_a;
        j = end_b;
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_is_numeric_per_component() {
        let v = |s| Dotted::parse(s).unwrap();
        assert!(v("570.26") < v("570.86.10"));
        assert!(v("570.86.10") < v("570.124.06"));
        assert_eq!(v("580"), v("580.0.0"));
        assert!(v("580.95.05") < v("580.159.04"));
        assert!(Dotted::parse("../x").is_none());
        assert_eq!(
            v("570.124.06").to_string(),
            "570.124.06",
            "zero padding is kept"
        );
        assert!(Dotted::parse("").is_none());
    }

    #[test]
    fn dpkg_ordering_matches_dpkg() {
        // Pairs checked with `dpkg --compare-versions`.
        assert_eq!(
            dpkg_compare("535.247.01-1~deb12u1", "535.247.01-1"),
            Ordering::Less
        );
        assert_eq!(
            dpkg_compare("535.216.03-1~deb12u1", "535.247.01-1~deb12u1"),
            Ordering::Less
        );
        assert_eq!(dpkg_compare("1:1.0", "2.0"), Ordering::Greater);
        assert_eq!(
            dpkg_compare("580.95.05-0ubuntu1", "580.95.05-0ubuntu1"),
            Ordering::Equal
        );
        assert_eq!(dpkg_compare("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(dpkg_compare("1.0a", "1.0+"), Ordering::Less);
        assert_eq!(upstream("1:535.247.01-1~deb12u1"), "535.247.01");
        assert_eq!(upstream("580.95.05"), "580.95.05");
    }

    #[test]
    fn rpm_ordering_matches_rpm() {
        assert_eq!(
            rpm_compare("3:580.95.05-1.el9", "3:580.82.07-1.el9"),
            Ordering::Greater
        );
        assert_eq!(rpm_compare("1.0~rc1-1", "1.0-1"), Ordering::Less);
        assert_eq!(rpm_compare("1.0a-1", "1.0-1"), Ordering::Greater);
        assert_eq!(rpm_compare("12.8.93-1", "12.8.93-1"), Ordering::Equal);
    }
}
