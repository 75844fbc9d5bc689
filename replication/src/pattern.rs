//! Harbor's name and tag patterns (`src/pkg/reg/util/pattern.go`, `Match`): an empty
//! pattern matches everything, `regex:<re>` is a regular expression searched anywhere
//! in the string (Go's `MatchString`, unanchored), and anything else is a
//! `github.com/bmatcuk/doublestar` v1 glob, ported here rule for rule so that a policy
//! copied from Harbor selects exactly what it selected there:
//!
//! | pattern | matches |
//! |---|---|
//! | `*` | any run of characters other than `/` (also none): `library` but not `library/app` |
//! | `**` as a whole path component | any number of components: `library/**` matches `library/a` and `library/a/b`, not `library`; `**/app` matches `app` and `x/y/app`; `**` alone matches everything |
//! | `**` inside a component (`lib**`) | the same as `*` |
//! | `?` | one character other than `/` |
//! | `[a-z0-9]`, `[^abc]` | one character of (not of) the class; `\` escapes inside it |
//! | `{a,b}` | either alternative; alternatives nest and may hold `/` (`{library,team/x}/**`) |
//! | `\c` | the character `c` itself |
//!
//! The whole string must match. The port keeps doublestar's corner cases too (an
//! alternative that ends the pattern is forgotten when another alternative continues
//! into a further path component, so `{a,a/b}` does not match `a`), because matching
//! differently from Harbor is the one thing this module must not do.
//!
//! Like doublestar, matching finds a malformed pattern (an unclosed `[` or `{`, a
//! trailing `\`) only when it gets that far, and then fails with an error rather than
//! a mismatch. [`Pattern::parse`] additionally checks a pattern up front, so the API
//! refuses what Harbor would only have failed on at replication time.

use std::fmt;

/// Harbor's prefix for a regular expression pattern.
pub const REGEX_PREFIX: &str = "regex:";

/// Steps [`Pattern::parse`] may take checking every expansion of a pattern's `{…}`
/// groups; a pattern needing more (dozens of groups in a row) is refused as too
/// complex rather than checked for minutes.
const CHECK_BUDGET: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// doublestar's `ErrBadPattern`.
    #[error("invalid pattern {0:?}: syntax error (an unclosed '[' or '{{', an empty or malformed character class, or a trailing '\\')")]
    Syntax(String),
    #[error("invalid regex pattern {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("pattern {0:?} is too complex to check (too many '{{…}}' groups)")]
    TooComplex(String),
}

/// A checked pattern, ready to match many strings (a `regex:` pattern is compiled once).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// The empty pattern: everything matches.
    Any,
    Regex(regex::Regex),
    Glob,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    /// Checks `source` and prepares it for matching.
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        let kind = if source.is_empty() {
            Kind::Any
        } else if let Some(re) = source.strip_prefix(REGEX_PREFIX) {
            Kind::Regex(regex::Regex::new(re).map_err(|e| PatternError::Regex {
                pattern: source.to_owned(),
                reason: e.to_string(),
            })?)
        } else {
            let mut budget = CHECK_BUDGET;
            match check_glob(source, &mut budget) {
                Ok(()) => Kind::Glob,
                Err(Check::Syntax) => return Err(PatternError::Syntax(source.to_owned())),
                Err(Check::Budget) => return Err(PatternError::TooComplex(source.to_owned())),
            }
        };
        Ok(Pattern {
            source: source.to_owned(),
            kind,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `s` matches, as Harbor's `Match(pattern, s)` answers. An error is a
    /// pattern doublestar finds malformed only on this input (see the module docs).
    pub fn matches(&self, s: &str) -> Result<bool, PatternError> {
        match &self.kind {
            Kind::Any => Ok(true),
            Kind::Regex(re) => Ok(re.is_match(s)),
            Kind::Glob => glob_match(&self.source, s)
                .map_err(|BadPattern| PatternError::Syntax(self.source.clone())),
        }
    }
}

/// Harbor's `util.Match(pattern, s)` in one call, for one-off matches.
pub fn matches(pattern: &str, s: &str) -> Result<bool, PatternError> {
    Pattern::parse(pattern)?.matches(s)
}

// ---- The doublestar v1 port ------------------------------------------------------------
//
// Byte indices into UTF-8 strings; every index is at a character boundary because it
// only ever advances by whole characters. Go's `nil` result of `matchComponent` is
// `None`; its empty slice (matched, nothing left for later components) is `Some(vec![])`.

/// doublestar's `ErrBadPattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadPattern;

/// doublestar's `Match(pattern, name)` with `/` as the separator.
fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let components = split_path(name);
    do_matching(pattern, &components)
}

/// The first `r` in `s` not preceded by a backslash (doublestar looks at one preceding
/// character only, so `\\]` counts as escaped too).
fn index_unescaped(s: &str, r: char) -> Option<usize> {
    let end = s.find(r)?;
    if end > 0 && s.as_bytes()[end - 1] == b'\\' {
        let start = end + r.len_utf8();
        index_unescaped(&s[start..], r).map(|e| e + start)
    } else {
        Some(end)
    }
}

/// Splits a name on `/` not preceded by a backslash; a trailing `/` leaves an empty
/// last component.
fn split_path(path: &str) -> Vec<&str> {
    if !path.contains('/') {
        return vec![path];
    }
    let mut components = Vec::new();
    let mut start = 0;
    let mut empty_end = false;
    while start < path.len() {
        let end = match index_unescaped(&path[start..], '/') {
            Some(end) => {
                empty_end = true;
                start + end
            }
            None => {
                empty_end = false;
                path.len()
            }
        };
        components.push(&path[start..end]);
        start = end + 1;
    }
    if empty_end {
        components.push("");
    }
    components
}

/// Splits the alternatives of a `{…}` group whose opening brace precedes `s`; returns
/// them and the index just past the closing brace, or `None` if it never closes.
/// Nested groups and escaped characters are respected.
fn split_alternatives(s: &str) -> Option<(Vec<&str>, usize)> {
    let mut options = Vec::with_capacity(2);
    let mut depth = 1;
    let mut escaped = false;
    let (mut idx, mut start) = (0, 0);
    while depth > 0 {
        let c = s[idx..].chars().next()?;
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth -= 1;
        } else if c == ',' && depth == 1 {
            options.push(&s[start..idx]);
            start = idx + c.len_utf8();
        }
        idx += c.len_utf8();
    }
    options.push(&s[start..idx - 1]);
    Some((options, idx))
}

/// Whether `pattern` (one path component's worth) can match no characters at all.
fn is_zero_length(pattern: &str) -> Result<bool, BadPattern> {
    if pattern.is_empty() || pattern == "*" || pattern == "**" {
        return Ok(true);
    }
    if let Some(rest) = pattern.strip_prefix('{') {
        let (options, end) = split_alternatives(rest).ok_or(BadPattern)?;
        if !is_zero_length(&rest[end..])? {
            return Ok(false);
        }
        for option in options {
            if is_zero_length(option)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn do_matching(pattern: &str, names: &[&str]) -> Result<bool, BadPattern> {
    if pattern.is_empty() {
        if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
            return Ok(!names.is_empty() || pattern.is_empty());
        }
    } else if names.is_empty() {
        return Ok(false);
    }
    let (first, last_component, rest) = match index_unescaped(pattern, '/') {
        Some(slash) => (&pattern[..slash], false, &pattern[slash + 1..]),
        None => (pattern, true, ""),
    };
    if first == "**" {
        // A trailing `**` takes whatever is left; otherwise it takes some leading
        // components and the rest of the pattern must match what remains (errors of
        // those attempts are ignored, as doublestar ignores them).
        if last_component {
            return Ok(true);
        }
        for i in 0..names.len() {
            if let Ok(true) = do_matching(rest, &names[i..]) {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    let Some(continuations) = match_component(pattern, names[0])? else {
        return Ok(false);
    };
    if continuations.is_empty() && names.len() == 1 {
        return Ok(true);
    }
    if names.len() > 1 {
        for continuation in &continuations {
            if do_matching(continuation, &names[1..])? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Matches one name component against the start of `pattern` (which may span several
/// components). `None`: no match. `Some(patterns)`: a match, and what of the pattern
/// remains for the following components (empty: the pattern ended here).
fn match_component(pattern: &str, name: &str) -> Result<Option<Vec<String>>, BadPattern> {
    let (mut p, mut n) = (0usize, 0usize);
    while p < pattern.len() && n < name.len() {
        let pc = char_at(pattern, p);
        let nc = char_at(name, n);
        if pc == '/' {
            // The pattern's component ended before the name's.
            p += 1;
            break;
        } else if pc == '\\' {
            p += 1;
            let Some(escaped) = pattern[p..].chars().next() else {
                return Err(BadPattern);
            };
            if escaped != nc {
                return Ok(None);
            }
            p += escaped.len_utf8();
            n += nc.len_utf8();
        } else if pc == '*' {
            p += 1;
            if p >= pattern.len() {
                return Ok(Some(Vec::new()));
            }
            if char_at(pattern, p) == '/' {
                return Ok(Some(vec![pattern[p + 1..].to_owned()]));
            }
            // The star takes 0, 1, 2, … characters; the name's last character is never
            // left for the rest to match on its own (doublestar's loop stops there).
            while n < name.len() {
                let found = match_component(&pattern[p..], &name[n..])?;
                if found.is_some() {
                    return Ok(found);
                }
                n += char_at(name, n).len_utf8();
            }
            return Ok(None);
        } else if pc == '[' {
            p += 1;
            let end = p + index_unescaped(&pattern[p..], ']').ok_or(BadPattern)?;
            if !class_matches(&pattern[p..end], nc)? {
                return Ok(None);
            }
            p = end + 1;
            n += nc.len_utf8();
        } else if pc == '{' {
            p += 1;
            let (options, end) = split_alternatives(&pattern[p..]).ok_or(BadPattern)?;
            p += end;
            let mut all: Option<Vec<String>> = None;
            for option in options {
                let candidate = format!("{option}{}", &pattern[p..]);
                if let Some(found) = match_component(&candidate, &name[n..])? {
                    all.get_or_insert_with(Vec::new).extend(found);
                }
            }
            return Ok(all);
        } else if pc == '?' || pc == nc {
            p += pc.len_utf8();
            n += nc.len_utf8();
        } else {
            return Ok(None);
        }
    }
    if n >= name.len() {
        if p >= pattern.len() {
            return Ok(Some(Vec::new()));
        }
        // The name component is used up: what is left of the pattern's component must
        // be able to match nothing.
        let rest = &pattern[p..];
        let slash = index_unescaped(rest, '/');
        let head = slash.map_or(rest, |s| &rest[..s]);
        if is_zero_length(head)? {
            return Ok(Some(match slash {
                None => Vec::new(),
                Some(s) => vec![rest[s + 1..].to_owned()],
            }));
        }
    }
    Ok(None)
}

fn char_at(s: &str, i: usize) -> char {
    // Callers index only inside `s`, at character boundaries.
    s[i..].chars().next().unwrap_or('\u{0}')
}

/// Whether `c` is in the class whose body (between `[` and `]`) is `class`.
fn class_matches(class: &str, c: char) -> Result<bool, BadPattern> {
    let runes: Vec<char> = class.chars().collect();
    if runes.is_empty() {
        return Err(BadPattern);
    }
    let negated = runes[0] == '^';
    let mut i = usize::from(negated);
    let mut found = false;
    while i < runes.len() {
        let mut low = runes[i];
        if low == '-' {
            return Err(BadPattern);
        }
        i += 1;
        if low == '\\' {
            low = *runes.get(i).ok_or(BadPattern)?;
            i += 1;
        }
        let mut high = low;
        if i < runes.len() && runes[i] == '-' {
            i += 1;
            high = *runes.get(i).ok_or(BadPattern)?;
            if high == '-' {
                return Err(BadPattern);
            }
            i += 1;
            if high == '\\' {
                high = *runes.get(i).ok_or(BadPattern)?;
                i += 1;
            }
        }
        if low <= c && c <= high {
            found = true;
        }
    }
    // `[^]` (negation of nothing) matches any character, as in doublestar.
    Ok(found != negated)
}

enum Check {
    Syntax,
    Budget,
}

/// Walks `pattern` as matching would, through every expansion of its `{…}` groups, and
/// fails where matching could meet `ErrBadPattern` at a point it reaches by itself.
fn check_glob(pattern: &str, budget: &mut usize) -> Result<(), Check> {
    let mut i = 0;
    while i < pattern.len() {
        *budget = budget.checked_sub(1).ok_or(Check::Budget)?;
        let c = char_at(pattern, i);
        match c {
            '\\' => {
                let escaped = pattern[i + 1..].chars().next().ok_or(Check::Syntax)?;
                i += 1 + escaped.len_utf8();
            }
            '[' => {
                let end = i + 1 + index_unescaped(&pattern[i + 1..], ']').ok_or(Check::Syntax)?;
                class_matches(&pattern[i + 1..end], 'a').map_err(|BadPattern| Check::Syntax)?;
                i = end + 1;
            }
            '{' => {
                let (options, end) = split_alternatives(&pattern[i + 1..]).ok_or(Check::Syntax)?;
                let rest = &pattern[i + 1 + end..];
                for option in options {
                    check_glob(&format!("{option}{rest}"), budget)?;
                }
                return Ok(());
            }
            _ => i += c.len_utf8(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, s: &str) -> bool {
        matches(pattern, s).unwrap_or_else(|e| panic!("{pattern:?} vs {s:?}: {e}"))
    }

    #[test]
    fn harbor_pattern_test_cases() {
        // src/pkg/reg/util/pattern_test.go, TestMatch.
        assert!(m("", "library"));
        assert!(m("", ""));
        assert!(m("*", "library"));
        assert!(!m("*", "library/hello-world"));
        assert!(m("**", "library/hello-world"));
        assert!(m("{library,harbor}/**", "library/hello-world"));
        assert!(m("{library,harbor}/**", "harbor/hello-world"));
        assert!(m("1.?", "1.0"));
        assert!(!m("1.?", "1.01"));
        assert!(m("v2.[4-6].*", "v2.4.0"));
        assert!(m("v2.[4-7].*", "v2.7.0"));
    }

    #[test]
    fn single_star_stays_inside_a_component() {
        assert!(m("library/*", "library/app"));
        assert!(!m("library/*", "library/a/b"));
        assert!(m("*/app", "team/app"));
        assert!(!m("*/app", "app"));
        assert!(m("lib*", "library"));
        assert!(m("lib*", "lib"));
        assert!(m("*ary", "library"));
        assert!(m("l*r*y", "library"));
        assert!(!m("l*r*y", "librar"));
        // `**` inside a component is a plain star.
        assert!(m("lib**", "library"));
        assert!(!m("lib**", "library/app"));
        // An empty name matches a star (an untagged artifact against tag pattern `*`).
        assert!(m("*", ""));
        assert!(!m("v*", ""));
        assert!(!m("?", ""));
    }

    #[test]
    fn double_star_spans_components() {
        assert!(m("library/**", "library/app"));
        assert!(m("library/**", "library/a/b/c"));
        // A trailing `/**` needs at least one more component.
        assert!(!m("library/**", "library"));
        // A leading or inner `**/` may take none.
        assert!(m("**/app", "app"));
        assert!(m("**/app", "a/b/app"));
        assert!(!m("**/app", "a/b/app2"));
        assert!(m("library/**/app", "library/app"));
        assert!(m("library/**/app", "library/x/y/app"));
        assert!(!m("library/**/app", "other/x/app"));
        assert!(m("**/*-dev", "team/svc/api-dev"));
        assert!(m("**", ""));
    }

    #[test]
    fn question_marks_classes_and_escapes() {
        assert!(m("app?", "app1"));
        assert!(!m("app?", "app"));
        assert!(!m("a?c", "a/c"));
        assert!(m("v[0-9]", "v7"));
        assert!(!m("v[0-9]", "vx"));
        assert!(m("v[^0-9]", "vx"));
        assert!(!m("v[^0-9]", "v7"));
        assert!(m("[abc]x", "bx"));
        assert!(m("[\\]]", "]"));
        // `[^]` negates nothing: any one character.
        assert!(m("[^]", "q"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("a\\{b", "a{b"));
    }

    #[test]
    fn alternatives() {
        assert!(m("{a,b}", "a"));
        assert!(m("{a,b}", "b"));
        assert!(!m("{a,b}", "c"));
        assert!(m("app-{dev,prod}", "app-prod"));
        assert!(m("{app,svc}-*", "svc-1"));
        // Nested groups, and alternatives holding a separator.
        assert!(m("{a,{b,c}d}", "cd"));
        assert!(m("{library,team/sub}/app", "team/sub/app"));
        assert!(m("{library,team/sub}/app", "library/app"));
        assert!(!m("{library,team/sub}/app", "team/app"));
        // An empty alternative.
        assert!(m("app{,-dev}", "app"));
        assert!(m("app{,-dev}", "app-dev"));
        assert!(m("1.0{,.*}", "1.0.3"));
        // doublestar's corner case: an alternative that ends the pattern is dropped when
        // another continues into a further component, so this is no match in Harbor.
        assert!(!m("{a,a/b}", "a"));
        assert!(m("{a,a/b}", "a/b"));
    }

    #[test]
    fn regex_patterns_search_anywhere() {
        assert!(m("regex:^v[0-9]+$", "v12"));
        assert!(!m("regex:^v[0-9]+$", "v12-rc"));
        // Unanchored, as Go's MatchString.
        assert!(m("regex:rc", "v1-rc2"));
        assert!(m("regex:^library/", "library/a/b"));
        assert!(matches!(
            Pattern::parse("regex:("),
            Err(PatternError::Regex { .. })
        ));
    }

    #[test]
    fn malformed_globs_are_refused_up_front() {
        for bad in [
            "[abc", "v[]", "a\\", "{a,b", "x{a,{b}", "[-a]", "[a-]", "{[a,b]}",
        ] {
            assert!(
                matches!(Pattern::parse(bad), Err(PatternError::Syntax(_))),
                "{bad:?} accepted"
            );
        }
        // A stray closing brace or bracket is a literal, as in doublestar.
        assert!(m("a}", "a}"));
        assert!(m("a]", "a]"));
        assert!(Pattern::parse("{a,b}{c,d}/**").is_ok());
        // Exponentially many expansions are refused rather than checked for ever.
        let many = "{a,b}".repeat(40);
        assert!(matches!(
            Pattern::parse(&many),
            Err(PatternError::TooComplex(_))
        ));
    }

    #[test]
    fn lazy_syntax_errors_surface_as_errors_not_mismatches() {
        // Accepted up front (the pattern's own `{…}` closes), but doublestar trips over
        // the alternative that spans a `/` when the name ends first; Harbor then fails
        // the replication, and so must Berth rather than silently skip.
        let p = Pattern::parse("x{a/b,c}").unwrap();
        assert_eq!(p.matches("xc"), Ok(true));
        assert!(p.matches("x").is_err());
    }

    #[test]
    fn unicode_is_matched_by_character() {
        assert!(m("caf?", "café"));
        assert!(m("[à-ü]", "é"));
        assert!(m("*é", "café"));
    }

    #[test]
    fn splits_names_like_doublestar() {
        assert_eq!(split_path("a"), vec!["a"]);
        assert_eq!(split_path("a/b"), vec!["a", "b"]);
        assert_eq!(split_path("a/"), vec!["a", ""]);
        assert_eq!(split_path("/"), vec!["", ""]);
        assert_eq!(split_path(""), vec![""]);
        assert_eq!(
            split_alternatives("a,{b,c},d}rest"),
            Some((vec!["a", "{b,c}", "d"], 10))
        );
        assert_eq!(split_alternatives("a,b"), None);
    }
}
