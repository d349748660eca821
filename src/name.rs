//! Package names, versions and tarball file names, validated by npm's rules.
//!
//! Every storage key and file path nmr builds comes from these types, never
//! from a raw request string. The rules are those of npm's
//! `validate-npm-package-name` for new packages (at most 214 characters,
//! lowercase, URL-safe, no leading `.` or `_`, at most one `@scope/`), made
//! stricter where npm's leave a hole: each part of a scoped name is checked on
//! its own, so `@a/..` and `@a/.x` are refused. Versions are strict SemVer 2.0
//! as `semver.valid()` accepts them for publishing.

use std::fmt;

/// The longest package name npm accepts, in bytes.
pub const MAX_NAME_LENGTH: usize = 214;

/// A package name that passed [`PackageName::parse`]: `name` or
/// `@scope/name`. Safe to use in a storage key or path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName {
    full: String,
    /// Byte index of the `/` in a scoped name.
    slash: Option<usize>,
}

impl PackageName {
    /// Validates `name` by npm's rules for new package names.
    ///
    /// Errors are sentences a user can act on, e.g. `package name "@Acme/x"
    /// must be lowercase`.
    pub fn parse(name: &str) -> Result<PackageName, String> {
        let slash = Self::validate(name)?;
        Ok(PackageName {
            full: name.to_string(),
            slash,
        })
    }

    /// [`PackageName::parse`] of a name already in a `String` (one decoded
    /// from a request path), kept without a copy.
    pub fn parse_owned(name: String) -> Result<PackageName, String> {
        let slash = Self::validate(&name)?;
        Ok(PackageName { full: name, slash })
    }

    /// Checks `name` by npm's rules; returns the byte index of the `/` of a
    /// scoped name.
    fn validate(name: &str) -> Result<Option<usize>, String> {
        // The names nmr serves are plain ASCII in the allowed set: one pass
        // over the bytes settles them. Anything else takes the rules one by
        // one (check_each_rule), for a precise message.
        match plainly_valid(name) {
            Some(slash) => Ok(slash),
            None => check_each_rule(name),
        }
    }

    /// The full name, `name` or `@scope/name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The scope without `@`, for scoped names.
    pub fn scope(&self) -> Option<&str> {
        self.slash.map(|i| &self.full[1..i])
    }

    /// The name without its scope: `widget` for `@acme/widget`. Tarball file
    /// names start with it.
    pub fn basename(&self) -> &str {
        match self.slash {
            Some(i) => &self.full[i + 1..],
            None => &self.full,
        }
    }

    /// Whether this is a scoped (`@scope/name`) package, the only kind nmr hosts.
    pub fn is_scoped(&self) -> bool {
        self.slash.is_some()
    }

    /// The name escaped as npm writes it in document routes: `@scope%2fname`.
    pub fn escaped(&self) -> String {
        self.full.replacen('/', "%2f", 1)
    }

    /// The canonical tarball path for `version`, relative to the registry
    /// root: `@acme/widget/-/widget-1.0.0.tgz` (npm's layout, docs/npm-protocol.md, "Tarballs").
    pub fn tarball_path(&self, version: &Version) -> String {
        format!("{}/-/{}", self.full, self.tarball_file(version))
    }

    /// The tarball file name for `version`: `widget-1.0.0.tgz`.
    pub fn tarball_file(&self, version: &Version) -> String {
        format!("{}-{}.tgz", self.basename(), version)
    }

    /// Parses a tarball file name of this package (`widget-1.0.0.tgz`) into
    /// its version. `None` when the name is not this package's or the version
    /// is not valid.
    pub fn version_of_tarball(&self, file: &str) -> Option<Version> {
        let v = file
            .strip_suffix(".tgz")?
            .strip_prefix(self.basename())?
            .strip_prefix('-')?;
        Version::parse(v).ok()
    }
}

/// [`PackageName::parse`]'s rules one at a time, each failure its own
/// message; returns the byte index of a scoped name's `/`.
fn check_each_rule(name: &str) -> Result<Option<usize>, String> {
    let bad = |why: &str| Err(format!("package name {name:?} {why}"));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_LENGTH {
        return bad("must be at most 214 characters");
    }
    if name.trim() != name {
        return bad("must not have leading or trailing spaces");
    }
    if name.chars().any(changes_when_lowercased) {
        return bad("must be lowercase");
    }
    let (scope, base, slash) = match name.strip_prefix('@') {
        Some(rest) => match rest.split_once('/') {
            Some((scope, base)) => (Some(scope), base, Some(scope.len() + 1)),
            None => return bad("must be @scope/name when it starts with @"),
        },
        None => (None, name, None),
    };
    for part in scope.iter().chain(std::iter::once(&base)) {
        if part.is_empty() {
            return bad("has an empty scope or name part");
        }
        if part.starts_with('.') || part.starts_with('_') {
            return bad("must not start with . or _");
        }
        if let Some(c) = part.chars().find(|c| !is_name_char(*c)) {
            return bad(&format!(
                "contains {c:?}: only a-z, 0-9, '-', '.' and '_' are allowed"
            ));
        }
    }
    if scope.is_none() && (name == "node_modules" || name == "favicon.ico") {
        return bad("is reserved");
    }
    Ok(slash)
}

/// `Some(slash)` when `name` passes every rule of [`PackageName::parse`],
/// judged in one pass over its bytes: at most 214 of them, each allowed
/// ([`is_name_char`]) but for a leading `@` and, after it, one `/`, each
/// part non-empty and not starting with `.` or `_`, and not a reserved
/// name. `None` says only that the full check must decide.
fn plainly_valid(name: &str) -> Option<Option<usize>> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LENGTH {
        return None;
    }
    let scoped = bytes[0] == b'@';
    let mut slash = None;
    let mut part_start = usize::from(scoped);
    for (i, &b) in bytes.iter().enumerate().skip(part_start) {
        if b == b'/' && scoped && slash.is_none() {
            slash = Some(i);
            part_start = i + 1;
            continue;
        }
        if i == part_start && matches!(b, b'.' | b'_') {
            return None;
        }
        if !is_name_char(char::from(b)) {
            return None;
        }
    }
    if part_start >= bytes.len() || (scoped && slash.is_none_or(|s| s == 1)) {
        return None;
    }
    if !scoped && (name == "node_modules" || name == "favicon.ico") {
        return None;
    }
    Some(slash)
}

/// Whether lowercasing changes `c` (what `name.to_lowercase() != name`
/// asks, without building the lowercased copy).
fn changes_when_lowercased(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_uppercase();
    }
    let mut lower = c.to_lowercase();
    !(lower.next() == Some(c) && lower.next().is_none())
}

/// Characters allowed in a new package name part: npm requires URL-safe
/// (`encodeURIComponent(x) === x`) and forbids `~'!()*` in new names, which
/// leaves lowercase letters, digits, `-`, `.` and `_`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A strict SemVer 2.0 version (`1.2.3`, `2.0.0-beta.1`, `1.0.0+build`), as
/// npm accepts for publishing. Safe to use in a storage key or path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    text: String,
    parsed: semver::Version,
}

impl Version {
    /// Parses a strict SemVer version; a leading `v` or `=` is refused (npm's
    /// publish normalises those away before sending).
    pub fn parse(text: &str) -> Result<Version, String> {
        if text.len() > 256 {
            return Err("version is longer than 256 characters".into());
        }
        let parsed = semver::Version::parse(text)
            .map_err(|e| format!("version {text:?} is not valid semver: {e}"))?;
        Ok(Version {
            text: text.to_string(),
            parsed,
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has a prerelease part (`-beta.1`).
    pub fn is_prerelease(&self) -> bool {
        !self.parsed.pre.is_empty()
    }

    /// npm's ordering: SemVer precedence, build metadata ignored.
    pub fn cmp_precedence(&self, other: &Version) -> std::cmp::Ordering {
        self.parsed.cmp_precedence(&other.parsed)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Validates a dist-tag name. npm refuses tags that are valid semver ranges
/// (they would be ambiguous in `npm install pkg@TAG`); nmr also requires them
/// to be URL-safe, as they travel in paths.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > 128 {
        return Err("a dist-tag must have 1 to 128 characters".into());
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "dist-tag {tag:?} may contain only letters, digits, '-', '.' and '_'"
        ));
    }
    if nodejs_semver::Range::parse(tag).is_ok() {
        return Err(format!(
            "dist-tag {tag:?} is a valid semver range; use a name such as \"beta\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_npm_names() {
        for ok in ["widget", "@acme/widget", "a", "@a/b-c.d_e", "x1.2"] {
            PackageName::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let n = PackageName::parse("@acme/widget").unwrap();
        assert_eq!(n.scope(), Some("acme"));
        assert_eq!(n.basename(), "widget");
        assert_eq!(n.escaped(), "@acme%2fwidget");
        assert!(n.is_scoped());
        assert!(!PackageName::parse("widget").unwrap().is_scoped());
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_rules() {
        // Every string of up to 5 characters over an alphabet that reaches
        // each rule: the one-pass check may pass only what the rules pass,
        // with the same slash.
        let alphabet = ['a', '1', '-', '.', '_', '@', '/', 'A', ' ', 'é'];
        let mut names = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..5 {
            names = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            all.extend(names.iter().cloned());
        }
        all.extend(["node_modules", "favicon.ico", "@a/node_modules"].map(String::from));
        all.push("a".repeat(214));
        all.push("a".repeat(215));
        let mut passed = 0;
        for name in &all {
            if let Some(slash) = plainly_valid(name) {
                passed += 1;
                assert_eq!(check_each_rule(name), Ok(slash), "{name:?}");
            }
            assert_eq!(
                PackageName::parse(name).map(|n| n.slash),
                check_each_rule(name),
                "{name:?}"
            );
        }
        assert!(passed > 1000, "the one-pass check passed only {passed}");
    }

    #[test]
    fn refuses_what_npm_refuses() {
        let long = "a".repeat(215);
        for (bad, why) in [
            ("", "empty"),
            (long.as_str(), "214"),
            ("Widget", "lowercase"),
            ("@Acme/widget", "lowercase"),
            ("@acme/wÍdget", "lowercase"),
            (".hidden", "start with"),
            ("_private", "start with"),
            ("@acme/.x", "start with"),
            ("@acme/..", "start with"),
            ("@acme/../../etc", "must not"),
            ("@acme", "@scope/name"),
            ("@/x", "empty"),
            ("@acme/", "empty"),
            ("a b", "contains ' '"),
            (" a", "spaces"),
            ("a%2f", "contains '%'"),
            ("caf\u{e9}", "contains"),
            ("wid!get", "contains '!'"),
            ("a\\b", "contains"),
            ("node_modules", "reserved"),
        ] {
            let e = PackageName::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tarball_paths_use_the_basename() {
        let n = PackageName::parse("@acme/widget").unwrap();
        let v = Version::parse("1.0.0-beta.1").unwrap();
        assert_eq!(n.tarball_path(&v), "@acme/widget/-/widget-1.0.0-beta.1.tgz");
        assert_eq!(n.version_of_tarball("widget-1.0.0-beta.1.tgz"), Some(v));
        assert_eq!(n.version_of_tarball("other-1.0.0.tgz"), None);
        assert_eq!(n.version_of_tarball("widget-1.0.tgz"), None);
        assert_eq!(n.version_of_tarball("widget-1.0.0.tar"), None);
        assert_eq!(n.version_of_tarball("widget-../../x.tgz"), None);
    }

    #[test]
    fn versions_are_strict_semver() {
        for ok in ["1.0.0", "0.0.1-alpha.1", "1.2.3+build.5", "10.20.30-rc.1+x"] {
            Version::parse(ok).unwrap();
        }
        for bad in [
            "1.0", "v1.0.0", "=1.0.0", "1.0.0.0", "01.0.0", "latest", "", "1.0.0/..",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
        let a = Version::parse("1.0.0+a").unwrap();
        let b = Version::parse("1.0.0+b").unwrap();
        assert_eq!(a.cmp_precedence(&b), std::cmp::Ordering::Equal);
        assert!(Version::parse("1.0.0-beta").unwrap().is_prerelease());
    }

    #[test]
    fn tags_must_not_be_ranges() {
        for ok in ["latest", "beta", "next", "release-candidate", "v-next"] {
            validate_tag(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["1.0.0", "^1.2", "1.x", "", "a/b", "*", "a b"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
