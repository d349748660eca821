//! What nmr checks about a write body before anything is written: that it
//! is bound to the package in the URL, that a publish's one tarball decodes
//! to the length and hashes the client declared, and that the `package.json`
//! inside the tarball names the same package and version (manifest
//! confusion, docs/security.md, "Lessons from other registries").
//!
//! The body shape is npm's publish PUT (docs/npm-protocol.md, "publish"):
//! `_id`, `name`, `dist-tags` (one entry), `versions` (one version manifest)
//! and `_attachments` (`"<name>-<version>.tgz": {data: base64, length}`; a
//! `.sigstore` provenance bundle may sit beside it and is ignored).
//! Deprecate and unpublish PUTs carry a whole packument instead.
//!
//! Bodies are parsed into [`WriteBody`], which keeps each field it needs as
//! raw JSON text and skips every other without building anything, so an
//! authorized 100 MiB body costs a small multiple of its size in memory,
//! never a JSON tree of its elements. The one version manifest a publish
//! carries is parsed into a tree only once it is known to hold at most
//! [`MAX_MANIFEST_VALUES`] JSON values.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::{Digest, Sha512};

use crate::config::Settings;
use crate::error::ApiError;
use crate::manifest::{self, PackageFiles};
use crate::name::{PackageName, Version};
use crate::packument::{DistInfo, NewVersion};

/// The most bytes of `package/package.json` read from a tarball.
const MAX_PACKAGE_JSON: u64 = 1024 * 1024;

/// The most JSON values (objects, arrays, strings, numbers, literals) a
/// publish's version manifest may hold; a real one holds a few hundred.
pub const MAX_MANIFEST_VALUES: usize = 100_000;

/// A publish body that passed every check, with its decoded tarball.
#[derive(Debug)]
pub struct VerifiedPublish {
    pub new: NewVersion,
    pub tarball: Bytes,
}

/// The fields of a write body (`PUT /{pkg}`, `PUT /{pkg}/-rev/{rev}`) nmr
/// reads, each kept as raw JSON; every other field is skipped unparsed.
#[derive(Debug, Deserialize)]
pub struct WriteBody {
    #[serde(rename = "_id", default)]
    pub id: Option<Box<RawValue>>,
    #[serde(default)]
    pub name: Option<Box<RawValue>>,
    #[serde(rename = "_rev", default)]
    pub rev: Option<Box<RawValue>>,
    #[serde(rename = "dist-tags", default)]
    pub dist_tags: Option<Box<RawValue>>,
    /// Version → its manifest, raw.
    #[serde(default)]
    pub versions: Option<BTreeMap<String, Box<RawValue>>>,
    /// File name → attachment, raw.
    #[serde(rename = "_attachments", default)]
    pub attachments: Option<BTreeMap<String, Box<RawValue>>>,
}

impl WriteBody {
    /// Parses a write body: 400 unless it is a JSON object with these
    /// fields of the right kinds.
    pub fn parse(body: &[u8]) -> Result<WriteBody, ApiError> {
        // serde would read a struct from an array too: only an object is one.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::bad_request(format!(
                "the request body is not a JSON object of npm's shape: {e}"
            )),
            _ => ApiError::bad_request(format!("the request body is not valid JSON: {e}")),
        })
    }

    /// Whether the body carries attachments (a publish, not a deprecation).
    pub fn has_attachments(&self) -> bool {
        self.attachments.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// The `_rev` the client read, when it sent one as a string.
    pub fn rev(&self) -> Option<String> {
        self.rev
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// The `deprecated` field of each version, for `npm deprecate`:
    /// `{VERSION: {"deprecated": ...}}` for the versions that carry one (as
    /// sent; [`crate::packument::deprecate`] checks its type), and `{}` for
    /// the others, with nothing else of the manifests parsed.
    pub fn deprecations(&self) -> Result<Map<String, Value>, ApiError> {
        #[derive(Deserialize)]
        struct Deprecated {
            #[serde(default)]
            deprecated: Option<Box<RawValue>>,
        }
        let mut out = Map::new();
        for (version, raw) in self.versions.iter().flatten() {
            let parsed: Deprecated = serde_json::from_str(raw.get()).map_err(|_| {
                ApiError::bad_request(format!("versions[{version:?}] must be an object"))
            })?;
            let mut entry = Map::new();
            if let Some(deprecated) = parsed.deprecated {
                let value = serde_json::from_str::<String>(deprecated.get())
                    .map(Value::String)
                    .unwrap_or(Value::Bool(false));
                entry.insert("deprecated".into(), value);
            }
            out.insert(version.clone(), Value::Object(entry));
        }
        Ok(out)
    }
}

/// How many JSON values the raw JSON text `raw` holds, counting up to
/// `limit + 1` (enough to tell it is too many). Each opening bracket and
/// each value after a `,` or `:` counts once, outside strings.
pub fn count_values(raw: &str, limit: usize) -> usize {
    let mut count = 1;
    let mut in_string = false;
    let mut escaped = false;
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b':' | b'[' | b'{' => {
                count += 1;
                if count > limit {
                    return count;
                }
            }
            _ => {}
        }
    }
    count
}

/// Parses a JSON request body into an object, or 400. For small bodies
/// only (login): the tree is built whole.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Checks that the body's `_id` and `name`, where present, are exactly
/// `name`: every write is bound to the package in the URL.
pub fn check_bound_to(body: &WriteBody, name: &PackageName) -> Result<(), ApiError> {
    for (field, raw) in [("_id", &body.id), ("name", &body.name)] {
        let Some(raw) = raw else { continue };
        if serde_json::from_str::<String>(raw.get()).ok().as_deref() != Some(name.as_str()) {
            let shown: String = raw.get().chars().take(100).collect();
            return Err(ApiError::bad_request(format!(
                "the body's {field} ({shown}) does not match the package in the URL ({name})"
            )));
        }
    }
    Ok(())
}

/// Verifies a publish body for `name` (already checked to be bound to it
/// with [`check_bound_to`]). CPU-heavy for large tarballs: call it off the
/// async runtime.
///
/// Errors are 400 with a sentence naming the field at fault.
pub fn verify_publish(
    name: &PackageName,
    body: WriteBody,
    settings: &Settings,
) -> Result<VerifiedPublish, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    let Some(versions) = body.versions else {
        return bad("the publish body has no versions object".into());
    };
    if versions.len() != 1 {
        return bad(format!(
            "a publish must carry exactly one version, this one has {}",
            versions.len()
        ));
    }
    let (version_key, raw_manifest) = versions.into_iter().next().expect("one version");
    let version = Version::parse(&version_key).map_err(ApiError::bad_request)?;
    let mut manifest = parse_manifest(&version_key, &raw_manifest)?;
    drop(raw_manifest);
    let readme = match manifest.remove("readme") {
        Some(Value::String(readme)) => Some(cut_at_char_boundary(readme, settings.max_readme_size)),
        _ => None,
    };
    let size = serde_json::to_vec(&manifest).map_or(usize::MAX, |v| v.len());
    if size > settings.max_manifest_size {
        return Err(too_large(format!(
            "versions[{version_key:?}] takes {size} bytes without its readme, more than settings.max_manifest_size ({})",
            settings.max_manifest_size
        )));
    }
    if manifest.get("name").and_then(Value::as_str) != Some(name.as_str()) {
        return bad(format!(
            "versions[{version_key:?}].name must be {name:?}, the package in the URL"
        ));
    }
    if manifest.get("version").and_then(Value::as_str) != Some(version_key.as_str()) {
        return bad(format!(
            "versions[{version_key:?}].version must be {version_key:?}"
        ));
    }

    let tags = match body
        .dist_tags
        .as_deref()
        .map(|raw| serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()))
    {
        None => vec!["latest".to_string()],
        Some(Ok(tags)) => {
            let mut out = Vec::new();
            for (tag, target) in tags {
                if serde_json::from_str::<String>(target.get()).ok().as_deref()
                    != Some(version_key.as_str())
                {
                    return bad(format!(
                        "dist-tags.{tag} must point at the version being published ({version_key})"
                    ));
                }
                out.push(tag);
            }
            out
        }
        Some(Err(_)) => return bad("dist-tags must be an object".into()),
    };

    let Some(attachments) = body.attachments else {
        return bad("the publish body has no _attachments object".into());
    };
    let expected_file = format!("{name}-{version_key}.tgz");
    let mut tarball_attachment: Option<Box<RawValue>> = None;
    for (file, attachment) in attachments {
        if file == expected_file {
            tarball_attachment = Some(attachment);
        } else if file == format!("{name}-{version_key}.sigstore") {
            // A provenance bundle (plain JSON, not base64): not stored.
        } else {
            return bad(format!(
                "unexpected attachment {file:?}: the only tarball accepted is {expected_file:?}"
            ));
        }
    }
    let Some(attachment) = tarball_attachment else {
        return bad(format!("_attachments lacks the tarball {expected_file:?}"));
    };
    #[derive(Deserialize)]
    struct Attachment {
        data: Option<String>,
        #[serde(default)]
        length: Option<Value>,
    }
    let parsed = serde_json::from_str::<Attachment>(attachment.get());
    drop(attachment);
    let Ok(Attachment {
        data: Some(data),
        length,
    }) = parsed
    else {
        return bad(format!(
            "_attachments[{expected_file:?}].data must be a base64 string"
        ));
    };
    let tarball = base64::engine::general_purpose::STANDARD
        .decode(&data)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "_attachments[{expected_file:?}].data is not valid base64: {e}"
            ))
        })?;
    // The base64 text is no longer needed: free it before hashing and unpacking.
    drop(data);
    if let Some(length) = length
        && length.as_u64() != Some(tarball.len() as u64)
    {
        return bad(format!(
            "_attachments[{expected_file:?}].length is {length} but the data decodes to {} bytes",
            tarball.len()
        ));
    }

    let shasum = hex::encode(Sha1::digest(&tarball));
    let sha512 = Sha512::digest(&tarball);
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha512)
    );
    let dist = manifest.get("dist");
    if let Some(claimed) = dist.and_then(|d| d.get("shasum")).and_then(Value::as_str)
        && !claimed.eq_ignore_ascii_case(&shasum)
    {
        return bad(format!(
            "dist.shasum is {claimed} but the tarball's SHA-1 is {shasum}"
        ));
    }
    if let Some(claimed) = dist
        .and_then(|d| d.get("integrity"))
        .and_then(Value::as_str)
    {
        check_integrity(claimed, &shasum, &integrity)?;
    }

    let contents = read_tarball(
        &tarball,
        TarballLimits {
            max_unpacked_size: settings.max_unpacked_size,
            max_file_count: settings.max_file_count,
        },
    )?;
    let inner_name = contents.package_json.get("name").and_then(Value::as_str);
    let inner_version = contents.package_json.get("version").and_then(Value::as_str);
    if inner_name != Some(name.as_str()) || inner_version != Some(version_key.as_str()) {
        return bad(format!(
            "the tarball's package.json is {}@{} but the manifest is {name}@{version_key}: they must agree",
            inner_name.unwrap_or("(no name)"),
            inner_version.unwrap_or("(no version)")
        ));
    }

    let normalised = manifest::normalise(&contents.package_json, &contents.files);
    manifest::compare(&manifest, &normalised)?;
    let has_install_script = install_script(&normalised);
    Ok(VerifiedPublish {
        new: NewVersion {
            version,
            manifest,
            tags,
            readme,
            trusted_publisher: None,
            dist: DistInfo {
                shasum,
                integrity,
                file_count: contents.file_count,
                unpacked_size: contents.unpacked_size,
                has_install_script,
                has_shrinkwrap: contents.has_shrinkwrap,
            },
        },
        tarball: Bytes::from(tarball),
    })
}

/// Whether installing runs a script: the normalised `package.json` (which
/// holds the `install` npm adds for a `*.gyp` file) has `preinstall`,
/// `install` or `postinstall`.
fn install_script(normalised: &Map<String, Value>) -> bool {
    let scripts = normalised.get("scripts");
    ["preinstall", "install", "postinstall"]
        .iter()
        .any(|name| scripts.and_then(|s| s.get(*name)).is_some())
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut_at_char_boundary(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Parses the raw manifest of `version` into an object, refusing one of
/// more than [`MAX_MANIFEST_VALUES`] values (413) before building it.
fn parse_manifest(version: &str, raw: &RawValue) -> Result<Map<String, Value>, ApiError> {
    if count_values(raw.get(), MAX_MANIFEST_VALUES) > MAX_MANIFEST_VALUES {
        return Err(ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "versions[{version:?}] holds more than {MAX_MANIFEST_VALUES} JSON values: a version manifest is package.json's fields, not data"
            ),
        ));
    }
    match serde_json::from_str(raw.get()) {
        Ok(Value::Object(manifest)) => Ok(manifest),
        _ => Err(ApiError::bad_request(format!(
            "versions[{version:?}] must be an object"
        ))),
    }
}

/// Checks a Subresource Integrity string (`sha512-… sha1-…`, space
/// separated) against the tarball: every sha512 and sha1 entry must match,
/// and at least one such entry must be present.
fn check_integrity(claimed: &str, shasum_hex: &str, integrity: &str) -> Result<(), ApiError> {
    let sha1_b64 = hex::decode(shasum_hex)
        .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw))
        .unwrap_or_default();
    let mut checked = 0;
    for entry in claimed.split_whitespace() {
        let entry = entry.split('?').next().unwrap_or(entry);
        let ok = if let Some(_b64) = entry.strip_prefix("sha512-") {
            entry == integrity
        } else if let Some(b64) = entry.strip_prefix("sha1-") {
            b64 == sha1_b64
        } else {
            continue;
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "dist.integrity is {entry} but the tarball's is {integrity}"
            )));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(ApiError::bad_request(format!(
            "dist.integrity {claimed:?} has no sha512 or sha1 entry"
        )));
    }
    Ok(())
}

/// What nmr reads from a tarball.
#[derive(Debug)]
pub struct TarballContents {
    /// `<top>/package.json`, parsed.
    pub package_json: Map<String, Value>,
    /// Regular files in the archive.
    pub file_count: u64,
    /// Sum of their sizes, in bytes.
    pub unpacked_size: u64,
    /// Whether `<top>/npm-shrinkwrap.json` is there (npm's `_hasShrinkwrap`).
    pub has_shrinkwrap: bool,
    /// Every entry's path below the top-level directory.
    pub files: PackageFiles,
}

/// How far a tarball may inflate (`settings.max_unpacked_size`,
/// `settings.max_file_count`).
#[derive(Debug, Clone, Copy)]
pub struct TarballLimits {
    pub max_unpacked_size: u64,
    pub max_file_count: u64,
}

/// A reader that fails once more than `left` bytes came through it: the
/// backstop against inflating more than a tarball's entries declare
/// (padding, headers, data after the end of the archive).
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other("the tarball inflates beyond settings.max_unpacked_size")
        })?;
        Ok(n)
    }
}

fn too_large(what: String) -> ApiError {
    ApiError::new(http::StatusCode::PAYLOAD_TOO_LARGE, what)
}

/// Reads a gzipped tar once, as npm would extract it (every gzip member, the
/// first path component stripped), and refuses (400, naming the problem)
/// what npm would extract differently from what nmr checks:
///
/// - more than one top-level directory (npm strips the first component of
///   every path, so `x/package.json` and `package/package.json` would both
///   land on `package.json`; the directory may be named other than
///   `package/`, but there is one);
/// - a `package.json` at depth one that is not exactly one regular file;
/// - an entry whose path is absolute or contains `..`, a device, fifo or
///   hard link, or a symbolic link pointing outside the package;
/// - anything that is not a valid gzip-compressed tar, or non-zero data
///   after the end of the archive.
///
/// A tarball whose entries add up to more than `limits.max_unpacked_size`
/// bytes, or hold more than `limits.max_file_count` entries, is refused
/// (413) as soon as the bound is crossed, from the entry headers, before
/// inflating the rest.
pub fn read_tarball(tgz: &[u8], limits: TarballLimits) -> Result<TarballContents, ApiError> {
    use std::path::Component;
    let bad = |m: String| ApiError::bad_request(format!("the tarball is refused: {m}"));
    let broken = |e: std::io::Error| {
        if e.to_string().contains("max_unpacked_size") {
            too_large(format!(
                "the tarball inflates to more than {} bytes (settings.max_unpacked_size)",
                limits.max_unpacked_size
            ))
        } else {
            ApiError::bad_request(format!("the tarball is not a valid gzipped tar: {e}"))
        }
    };
    // Headers and padding take at most 1.5 KiB per entry beyond its data.
    let cap = limits
        .max_unpacked_size
        .saturating_add(limits.max_file_count.saturating_mul(1536))
        .saturating_add(1 << 20);
    let mut archive = tar::Archive::new(Capped {
        inner: flate2::read::MultiGzDecoder::new(tgz),
        left: cap,
    });
    let mut top: Option<std::ffi::OsString> = None;
    let mut package_json: Option<String> = None;
    let (mut entries, mut file_count, mut unpacked_size) = (0u64, 0u64, 0u64);
    let mut has_shrinkwrap = false;
    let mut paths = Vec::new();
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        entries += 1;
        if entries > limits.max_file_count {
            return Err(too_large(format!(
                "the tarball has more than {} entries (settings.max_file_count)",
                limits.max_file_count
            )));
        }
        let path = entry.path().map_err(broken)?.into_owned();
        let shown = path.display().to_string();
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_os_string()),
                Component::CurDir => {}
                _ => {
                    return Err(bad(format!(
                        "the entry {shown:?} is absolute or contains .."
                    )));
                }
            }
        }
        let Some(first) = parts.first() else {
            return Err(bad(format!("the entry {shown:?} has no name")));
        };
        match &top {
            None => top = Some(first.clone()),
            Some(t) if t != first => {
                return Err(bad(format!(
                    "it has more than one top-level directory ({} and {}); npm would extract both into one",
                    t.to_string_lossy(),
                    first.to_string_lossy()
                )));
            }
            Some(_) => {}
        }
        let kind = entry.header().entry_type();
        let at_top = |name: &str| parts.len() == 2 && parts[1] == name;
        if parts.len() > 1 {
            let below: Vec<String> = parts[1..]
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            paths.push(below.join("/"));
        }
        if at_top("package.json") {
            if !kind.is_file() {
                return Err(bad(format!("{shown} is not a regular file")));
            }
            if package_json.is_some() {
                return Err(bad(format!(
                    "it has more than one {shown}; npm would install the last one"
                )));
            }
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(broken)?
                    .ok_or_else(|| bad(format!("the symbolic link {shown:?} has no target")))?;
                // Resolved against the link's directory inside the package.
                let mut depth = parts.len() as i64 - 2;
                for component in target.components() {
                    match component {
                        Component::Normal(_) => depth += 1,
                        Component::CurDir => {}
                        Component::ParentDir => depth -= 1,
                        _ => depth = -1,
                    }
                    if depth < 0 {
                        return Err(bad(format!(
                            "the symbolic link {shown:?} points outside the package ({})",
                            target.display()
                        )));
                    }
                }
                continue;
            }
            other => {
                return Err(bad(format!(
                    "the entry {shown:?} is a {other:?}, not a file, directory or symbolic link"
                )));
            }
        }
        let size = entry.size();
        unpacked_size = unpacked_size.saturating_add(size);
        if unpacked_size > limits.max_unpacked_size {
            return Err(too_large(format!(
                "the tarball inflates to more than {} bytes (settings.max_unpacked_size)",
                limits.max_unpacked_size
            )));
        }
        file_count += 1;
        has_shrinkwrap |= at_top("npm-shrinkwrap.json");
        if at_top("package.json") {
            if size > MAX_PACKAGE_JSON {
                return Err(too_large(format!(
                    "{shown} is larger than {MAX_PACKAGE_JSON} bytes"
                )));
            }
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(broken)?;
            package_json = Some(text);
        }
    }
    // npm's extraction ignores nothing after the end-of-archive blocks that
    // tar readers stop at, so neither may anything be there.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = rest.read(&mut buf).map_err(broken)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(bad("it has data after the end of the archive".into()));
        }
    }
    let text = package_json
        .ok_or_else(|| ApiError::bad_request("the tarball has no package/package.json"))?;
    let package_json = match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(ApiError::bad_request(
                "the tarball's package.json is not a JSON object",
            ));
        }
    };
    Ok(TarballContents {
        package_json,
        file_count,
        unpacked_size,
        has_shrinkwrap,
        files: PackageFiles { paths },
    })
}

/// Test helpers shared by unit and integration tests: building tarballs and
/// publish bodies the way `npm publish` does.
pub mod testing {
    use super::*;
    use serde_json::json;

    /// A gzipped tar with `package/package.json` for `name@version` and a
    /// `package/index.js`.
    pub fn tarball(name: &str, version: &str) -> Vec<u8> {
        tarball_with(
            name,
            version,
            &[("index.js", b"module.exports = 42;\n".as_slice())],
        )
    }

    /// A gzipped tar with `package/package.json` and `files` under `package/`.
    pub fn tarball_with(name: &str, version: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let package_json = json!({ "name": name, "version": version }).to_string();
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        let mut add = |path: &str, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("package/{path}"), data)
                .expect("append to tar");
        };
        add("package.json", package_json.as_bytes());
        for (path, data) in files {
            add(path, data);
        }
        builder
            .into_inner()
            .and_then(|gz| gz.finish())
            .expect("finish tarball")
    }

    /// A gzipped tar of raw entries: (path as written, type, data, link).
    pub fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    /// A publish body as `npm publish` sends it (docs/npm-protocol.md, "publish").
    pub fn publish_body(name: &str, version: &str, tag: &str, tgz: &[u8]) -> Value {
        let engine = base64::engine::general_purpose::STANDARD;
        json!({
            "_id": name,
            "name": name,
            "description": "test package",
            "dist-tags": { tag: version },
            "versions": { version: {
                "name": name,
                "version": version,
                "description": "test package",
                "_id": format!("{name}@{version}"),
                "dist": {
                    "integrity": format!("sha512-{}", engine.encode(Sha512::digest(tgz))),
                    "shasum": hex::encode(Sha1::digest(tgz)),
                    "tarball": format!("http://x/{name}/-/{name}-{version}.tgz"),
                },
            }},
            "access": null,
            "_attachments": { format!("{name}-{version}.tgz"): {
                "content_type": "application/octet-stream",
                "data": engine.encode(tgz),
                "length": tgz.len(),
            }},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use serde_json::json;
    use std::io::Read;

    fn name() -> PackageName {
        PackageName::parse("@acme/widget").unwrap()
    }

    fn verify(body: Value) -> Result<VerifiedPublish, ApiError> {
        let body = WriteBody::parse(body.to_string().as_bytes())?;
        check_bound_to(&body, &name())?;
        verify_publish(&name(), body, &settings())
    }

    fn settings() -> Settings {
        crate::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .settings
    }

    fn good() -> (Vec<u8>, Value) {
        let tgz = tarball("@acme/widget", "1.0.0");
        let body = publish_body("@acme/widget", "1.0.0", "latest", &tgz);
        (tgz, body)
    }

    /// `result` is an error with `status` whose message holds `needle`.
    fn assert_error<T: std::fmt::Debug>(result: Result<T, ApiError>, status: u16, needle: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.status, status, "{err}");
        assert!(
            err.message.contains(needle),
            "{needle:?} not in {:?}",
            err.message
        );
    }

    fn rejected(body: Value, needle: &str) {
        assert_error(verify(body), 400, needle);
    }

    #[test]
    fn accepts_what_npm_sends_and_computes_dist() {
        let (tgz, body) = good();
        let v = verify(body).unwrap();
        assert_eq!(v.tarball.as_ref(), tgz.as_slice());
        assert_eq!(v.new.version.as_str(), "1.0.0");
        assert_eq!(v.new.tags, ["latest"]);
        assert_eq!(v.new.dist.file_count, 2);
        assert!(v.new.dist.integrity.starts_with("sha512-"));
        assert_eq!(v.new.dist.shasum.len(), 40);
    }

    #[test]
    fn refuses_bodies_not_bound_to_the_url() {
        let (_, mut body) = good();
        body["_id"] = "@acme/other".into();
        rejected(body, "_id");
        let (_, mut body) = good();
        body["name"] = "@evil/widget".into();
        rejected(body, "name");
        let (_, mut body) = good();
        body["versions"]["1.0.0"]["name"] = "@acme/other".into();
        rejected(body, "versions[\"1.0.0\"].name");
    }

    #[test]
    fn refuses_bad_attachments() {
        let (tgz, mut body) = good();
        let att = body["_attachments"]["@acme/widget-1.0.0.tgz"].take();
        body["_attachments"] = json!({ "@acme/widget-2.0.0.tgz": att.clone() });
        rejected(body, "unexpected attachment");
        let (_, mut body) = good();
        body["_attachments"]["@acme/widget-1.0.0.tgz"]["data"] = "***not base64***".into();
        rejected(body, "not valid base64");
        let (_, mut body) = good();
        body["_attachments"]["@acme/widget-1.0.0.tgz"]["length"] = (tgz.len() + 1).into();
        rejected(body, "length");
        let (_, mut body) = good();
        body.as_object_mut().unwrap().remove("_attachments");
        rejected(body, "_attachments");
    }

    #[test]
    fn refuses_hash_mismatches() {
        let (_, mut body) = good();
        body["versions"]["1.0.0"]["dist"]["shasum"] = "0".repeat(40).into();
        rejected(body, "dist.shasum");
        let (_, mut body) = good();
        body["versions"]["1.0.0"]["dist"]["integrity"] = "sha512-AAAA".into();
        rejected(body, "dist.integrity");
    }

    #[test]
    fn refuses_manifest_confusion() {
        let tgz = tarball("@acme/other", "1.0.0");
        rejected(
            publish_body("@acme/widget", "1.0.0", "latest", &tgz),
            "package.json is @acme/other@1.0.0",
        );
        let tgz = tarball("@acme/widget", "6.6.6");
        rejected(
            publish_body("@acme/widget", "1.0.0", "latest", &tgz),
            "6.6.6",
        );
        let not_gzip = b"plain bytes".to_vec();
        rejected(
            publish_body("@acme/widget", "1.0.0", "latest", &not_gzip),
            "not a valid gzipped tar",
        );
    }

    #[test]
    fn counts_json_values_outside_strings() {
        assert_eq!(count_values(r#"{"a":[1,2,{"b":"x,y:[{"}]}"#, 100), 8);
        assert_eq!(count_values(r#""a\"b,c""#, 100), 1);
        assert_eq!(count_values(&format!("[{}0]", "0,".repeat(1000)), 10), 11);
    }

    #[test]
    fn huge_manifests_are_refused_before_parsing() {
        let (_, mut body) = good();
        body["versions"]["1.0.0"]["junk"] = json!(vec![0; MAX_MANIFEST_VALUES]);
        assert_eq!(verify(body).unwrap_err().status, 413);
        // Fields nmr does not read are skipped, however large.
        let (_, mut body) = good();
        body["unread"] = json!(vec![0; 200_000]);
        assert!(verify(body).is_ok());
        let junk = WriteBody::parse(b"[0,0,0]").unwrap_err();
        assert_eq!(junk.status, 400);
    }

    #[test]
    fn refuses_bad_versions_and_counts() {
        let tgz = tarball("@acme/widget", "1.0");
        rejected(
            publish_body("@acme/widget", "1.0", "latest", &tgz),
            "not valid semver",
        );
        let (_, mut body) = good();
        body["versions"]["2.0.0"] = body["versions"]["1.0.0"].clone();
        rejected(body, "exactly one version");
        let (_, mut body) = good();
        body["dist-tags"] = json!({"latest": "0.0.1"});
        rejected(body, "dist-tags.latest");
    }

    fn limits() -> TarballLimits {
        TarballLimits {
            max_unpacked_size: 1 << 20,
            max_file_count: 100,
        }
    }

    const PKG: &[u8] = br#"{"name":"@acme/widget","version":"1.0.0"}"#;
    const EVIL: &[u8] =
        br#"{"name":"@evil/other","version":"6.6.6","scripts":{"postinstall":"x"}}"#;

    fn refused(tgz: Vec<u8>, status: u16, needle: &str) {
        assert_error(read_tarball(&tgz, limits()), status, needle);
    }

    #[test]
    fn one_tarball_one_package_json() {
        use tar::EntryType::{Block, Char, Fifo, Link, Regular, Symlink};
        let ok = raw_tar(&[
            ("package/package.json", Regular, PKG, ""),
            ("package/lib/a.js", Regular, b"1", ""),
            ("package/lib/b.js", Symlink, b"", "a.js"),
            ("package/c.js", Symlink, b"", "lib/../lib/a.js"),
        ]);
        let contents = read_tarball(&ok, limits()).unwrap();
        assert_eq!(contents.file_count, 2);
        // Any one top-level name is fine: npm strips it.
        read_tarball(
            &raw_tar(&[("pkg/package.json", Regular, PKG, "")]),
            limits(),
        )
        .unwrap();
        refused(
            raw_tar(&[
                ("package/package.json", Regular, PKG, ""),
                ("package/package.json", Regular, EVIL, ""),
            ]),
            400,
            "more than one package/package.json",
        );
        refused(
            raw_tar(&[
                ("x/package.json", Regular, PKG, ""),
                ("package/package.json", Regular, EVIL, ""),
            ]),
            400,
            "more than one top-level directory",
        );
        refused(
            raw_tar(&[("package/package.json", Symlink, b"", "../../etc/passwd")]),
            400,
            "not a regular file",
        );
        for (entry, kind, link, needle) in [
            ("/package/x", Regular, "", "absolute"),
            ("package/../x", Regular, "", "contains .."),
            ("package/l", Symlink, "../../outside", "points outside"),
            ("package/l", Symlink, "/etc/passwd", "points outside"),
            ("package/h", Link, "package/package.json", "Link"),
            ("package/f", Fifo, "", "Fifo"),
            ("package/c", Char, "", "Char"),
            ("package/b", Block, "", "Block"),
        ] {
            refused(
                raw_tar(&[
                    ("package/package.json", Regular, PKG, ""),
                    (entry, kind, b"", link),
                ]),
                400,
                needle,
            );
        }
        refused(b"not gzip".to_vec(), 400, "not a valid gzipped tar");
    }

    #[test]
    fn inflation_is_bounded_before_it_happens() {
        use tar::EntryType::Regular;
        let zeros = vec![0u8; (1 << 20) + 1];
        refused(
            raw_tar(&[
                ("package/package.json", Regular, PKG, ""),
                ("package/big", Regular, &zeros, ""),
            ]),
            413,
            "settings.max_unpacked_size",
        );
        let many: Vec<(String, tar::EntryType, &[u8], &str)> = (0..101)
            .map(|i| (format!("package/f{i}"), Regular, b"x".as_slice(), ""))
            .collect();
        let many: Vec<(&str, tar::EntryType, &[u8], &str)> = many
            .iter()
            .map(|(p, k, d, l)| (p.as_str(), *k, *d, *l))
            .collect();
        refused(raw_tar(&many), 413, "settings.max_file_count");
    }

    #[test]
    fn nothing_hides_after_the_archive_or_in_a_second_gzip_member() {
        use std::io::Write;
        use tar::EntryType::Regular;
        let mut tgz = raw_tar(&[("package/package.json", Regular, PKG, "")]);
        // A second gzip member, which npm's extraction reads too.
        tgz.extend(raw_tar(&[("package/package.json", Regular, EVIL, "")]));
        refused(tgz, 400, "after the end of the archive");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let one = raw_tar(&[("package/package.json", Regular, PKG, "")]);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(one.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        gz.write_all(&tar).unwrap();
        gz.write_all(b"trailing junk").unwrap();
        refused(gz.finish().unwrap(), 400, "after the end of the archive");
    }

    #[test]
    fn manifests_are_bounded_and_lose_their_readme() {
        let (_, mut body) = good();
        body["versions"]["1.0.0"]["readme"] = json!("é".repeat(200_000));
        let v = verify(body).unwrap();
        let readme = v.new.readme.unwrap();
        assert!(readme.len() <= 256 * 1024 && readme.len() >= 256 * 1024 - 1);
        assert!(!v.new.manifest.contains_key("readme"));
        let (_, mut body) = good();
        body["versions"]["1.0.0"]["description"] = json!("x".repeat(1 << 20));
        let e = verify(body).unwrap_err();
        assert_eq!(e.status, 413);
        assert!(e.message.contains("settings.max_manifest_size"), "{e}");
    }
}
