//! Lexical building blocks of RFC 3261 §25.1: character classes, linear white space, quoted
//! strings, comma-separated lists and `;name=value` parameters.
//!
//! Everything here works on byte slices and never panics: malformed input yields `None` or an
//! error, which the callers turn into a 400 or a dropped message.

/// RFC 3261 §25.1 `token` characters: alphanum and `-.!%*_+`'~`.
#[inline]
pub fn is_token_char(b: u8) -> bool {
    TOKEN_CHARS[usize::from(b)]
}

/// [`is_token_char`] as a table: header names and parameters are checked byte by byte on every
/// message, and a lookup is several times cheaper than the comparisons.
static TOKEN_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        i += 1;
    }
    table
};

/// True when the whole slice is a non-empty `token`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Space, tab, CR or LF: the octets that make up LWS once folding is taken into account.
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims linear white space (including folded line breaks) from both ends.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Trims and views the slice as UTF-8 text; `None` if it is not UTF-8.
pub fn trim_str(s: &[u8]) -> Option<&str> {
    std::str::from_utf8(trim(s)).ok()
}

/// Finds the end of the quoted string that starts at `s[0] == b'"'`; returns the index just past
/// the closing quote. RFC 3261 §25.1 `quoted-pair` (`\` followed by any octet but CR/LF) is
/// honoured, so `\"` does not end the string.
pub fn quoted_string_end(s: &[u8]) -> Option<usize> {
    debug_assert_eq!(s.first(), Some(&b'"'));
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => {
                if matches!(s.get(i + 1), None | Some(b'\r') | Some(b'\n')) {
                    return None;
                }
                i += 2;
            }
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Removes the surrounding quotes and resolves quoted-pairs.
pub fn unquote(s: &[u8]) -> Option<Vec<u8>> {
    let s = trim(s);
    if s.len() < 2 || s[0] != b'"' || quoted_string_end(s)? != s.len() {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut it = inner.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            out.push(*it.next()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Splits a header value at top-level occurrences of `sep`, i.e. those not inside a quoted
/// string or `<...>`. Used for comma lists (RFC 3261 §7.3.1) and for parameters.
///
/// Returns `None` when a quoted string or angle bracket is left open.
pub fn split_top_level(s: &[u8], sep: u8) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    for_each_top_level(s, sep, |part| {
        parts.push(part);
        Some(())
    })?;
    Some(parts)
}

/// The first part [`split_top_level`] would return, without collecting the others; `None`
/// in the same cases (a quoted string or bracket left open anywhere in `s`).
pub fn first_top_level(s: &[u8], sep: u8) -> Option<&[u8]> {
    let mut first = None;
    for_each_top_level(s, sep, |part| {
        first.get_or_insert(part);
        Some(())
    })?;
    first
}

/// Calls `f` on each part [`split_top_level`] would return, in order, without allocating;
/// stops with `None` as soon as `f` returns `None` or a quoted string or bracket is left open.
fn for_each_top_level<'a>(s: &'a [u8], sep: u8, mut f: impl FnMut(&'a [u8]) -> Option<()>) -> Option<()> {
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i += quoted_string_end(&s[i..])?;
                continue;
            }
            b'<' if !in_angle => in_angle = true,
            b'>' if in_angle => in_angle = false,
            b if b == sep && !in_angle => {
                f(&s[start..i])?;
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if in_angle {
        return None;
    }
    f(&s[start..])
}

/// One `;name[=value]` generic parameter (RFC 3261 §25.1 `generic-param`). The value keeps its
/// quotes, if any, so that printing gives back the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The parameter's name.
    pub name: String,
    /// Its value, if it has one.
    pub value: Option<String>,
}

impl Param {
    /// A parameter `name`, with `value` if given.
    pub fn new(name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        Param { name: name.into(), value: value.map(Into::into) }
    }

    /// The value with quotes removed when it is a quoted string.
    pub fn unquoted_value(&self) -> Option<String> {
        let v = self.value.as_deref()?;
        if v.starts_with('"') {
            unquote(v.as_bytes()).and_then(|u| String::from_utf8(u).ok())
        } else {
            Some(v.to_owned())
        }
    }
}

/// Parses `;a=b;c;d="e f"` (the leading `;` already removed, i.e. the text after the first
/// separator). Empty parameters (`;;`) are a syntax error, as is a name that is not a token or
/// a value that is neither a token, a quoted string nor a host (RFC 3261 §25.1 `gen-value`).
pub fn parse_params(s: &[u8]) -> Option<Vec<Param>> {
    let mut out = Vec::new();
    for_each_top_level(s, b';', |raw| {
        let raw = trim(raw);
        let (name, value) = match raw.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(&raw[..eq]), Some(trim(&raw[eq + 1..]))),
            None => (raw, None),
        };
        if !is_token(name) {
            return None;
        }
        let value = match value {
            None => None,
            Some(v) if v.first() == Some(&b'"') => {
                if quoted_string_end(v)? != v.len() {
                    return None;
                }
                Some(String::from_utf8(v.to_vec()).ok()?)
            }
            Some(v) => {
                // gen-value = token / host / quoted-string; a host may be an IPv6 reference.
                if v.is_empty() || !v.iter().all(|&b| is_token_char(b) || matches!(b, b'[' | b']' | b':')) {
                    return None;
                }
                Some(String::from_utf8(v.to_vec()).ok()?)
            }
        };
        out.push(Param { name: String::from_utf8(name.to_vec()).ok()?, value });
        Some(())
    })?;
    Some(out)
}

/// Finds a parameter by case-insensitive name (parameter names are case-insensitive,
/// RFC 3261 §7.3.1).
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Writes parameters back as `;name=value`.
pub fn write_params(out: &mut String, params: &[Param]) {
    for p in params {
        out.push(';');
        out.push_str(&p.name);
        if let Some(v) = &p.value {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Writes parameters as `;name=value` straight to a formatter (no intermediate string: headers
/// are printed on every message).
pub fn fmt_params(f: &mut std::fmt::Formatter<'_>, params: &[Param]) -> std::fmt::Result {
    for p in params {
        f.write_str(";")?;
        f.write_str(&p.name)?;
        if let Some(v) = &p.value {
            f.write_str("=")?;
            f.write_str(v)?;
        }
    }
    Ok(())
}

/// Parses a decimal number without sign that fits in `u32`; leading zeros are allowed
/// (RFC 4475 §3.1.1.1) but overflow is an error (§3.1.2.4).
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 64 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        v = v * 10 + u64::from(b - b'0');
        if v > u64::from(u32::MAX) {
            return None;
        }
    }
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_matches_rfc_3261() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            assert_eq!(is_token_char(b), expected, "byte {b}");
        }
    }

    #[test]
    fn split_respects_quotes_and_brackets() {
        let parts = split_top_level(br#""a, b" <sip:x@y;p=1,2>, <sip:z>"#, b',').unwrap();
        assert_eq!(parts.len(), 2);
        assert!(split_top_level(br#""open"#, b',').is_none());
        assert!(split_top_level(b"<sip:open", b',').is_none());
    }

    #[test]
    fn first_part_agrees_with_the_split() {
        for s in [
            &br#""a, b" <sip:x@y;p=1,2>, <sip:z>"#[..],
            b"SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b",
            b"one",
            b"",
            b",",
            br#""open"#,
            b"a, <sip:open",
        ] {
            let split = split_top_level(s, b',');
            assert_eq!(first_top_level(s, b','), split.as_ref().map(|p| p[0]), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn params_reject_empty_and_accept_quoted() {
        let p = parse_params(br#"tag=1;lr;x="a;b""#).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].unquoted_value().as_deref(), Some("a;b"));
        assert!(parse_params(b"a;;b").is_none());
        assert!(parse_params(b"a=").is_none());
    }

    #[test]
    fn u32_leading_zeros_and_overflow() {
        assert_eq!(parse_u32(b"0000070"), Some(70));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"36893488147419103232"), None);
        assert_eq!(parse_u32(b"-1"), None);
    }

    #[test]
    fn unquote_resolves_pairs() {
        assert_eq!(unquote(br#""a\"b""#).unwrap(), b"a\"b");
        assert!(unquote(br#""a"b"#).is_none());
    }
}
