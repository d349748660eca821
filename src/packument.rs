//! The packument: the document npm reads for a package, and every rule that
//! changes it.
//!
//! A packument (docs/npm-protocol.md, "Packuments") has `_id`, `_rev`, `name`, `dist-tags`,
//! `versions` (version → version manifest) and `time` (`created`,
//! `modified`, one ISO-8601 timestamp per version ever published). nmr stores
//! that canonical form and derives the served documents from it with
//! [`render_full`] and [`render_abbreviated`]: those add `dist.tarball` (from
//! the public URL), hoist `description`, `readme` and friends from the
//! `latest` version, and for the abbreviated ("corgi") document keep only the
//! fields `npm install` needs.
//!
//! Tombstones: an unpublished version's `time` entry stays, so that version
//! number is never reused; a fully unpublished package keeps its document with
//! no versions and `time.unpublished = {time, versions}`.
//!
//! Everything here is a plain function over values, so the rules are unit
//! tested without HTTP or storage.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};

use crate::error::ApiError;
use crate::name::{PackageName, Version};

/// The canonical stored packument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packument {
    #[serde(rename = "_id")]
    pub id: String,
    /// `N-HEX`: N counts the revisions; npm echoes it back in `/-rev/` routes.
    #[serde(rename = "_rev")]
    pub rev: String,
    pub name: String,
    #[serde(rename = "dist-tags")]
    pub dist_tags: BTreeMap<String, String>,
    /// Version → version manifest, in publish order. Manifests carry `dist`
    /// without `tarball` (added when rendering).
    pub versions: Map<String, Value>,
    /// `created`, `modified`, a timestamp per version (kept after unpublish),
    /// and `unpublished` once the whole package is unpublished.
    pub time: Map<String, Value>,
    /// `[{"name": ..., "email"?: ...}]`: the first publisher.
    #[serde(default)]
    pub maintainers: Vec<Value>,
    /// The readme of the version that became `latest` by its publish (cut to
    /// `settings.max_readme_size`): served at the top level only, as npm's
    /// registry does. Version manifests keep none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readme: Option<String>,
}

/// What the registry computed from a published tarball: these replace whatever
/// the client claimed (docs/security.md, "Lessons from other registries").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistInfo {
    /// Hex SHA-1 of the tarball (npm's `shasum`).
    pub shasum: String,
    /// `sha512-<base64>` of the tarball (npm's `integrity`).
    pub integrity: String,
    /// Number of files in the tarball.
    pub file_count: u64,
    /// Sum of the files' sizes, in bytes.
    pub unpacked_size: u64,
    /// Whether installing runs a script (npm's `hasInstallScript`).
    pub has_install_script: bool,
    /// Whether the tarball has an `npm-shrinkwrap.json` (`_hasShrinkwrap`).
    pub has_shrinkwrap: bool,
}

/// One version being published: its manifest as the client sent it, the
/// dist-tags the client asked for, and the verified tarball facts.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub version: Version,
    /// The manifest without its `readme`.
    pub manifest: Map<String, Value>,
    pub tags: Vec<String>,
    /// The version's readme, already cut to size.
    pub readme: Option<String>,
    pub dist: DistInfo,
    /// For a publish with a token exchanged in CI: what `_npmUser` records
    /// as its `trustedPublisher` (repository, workflow, commit, run, actor).
    pub trusted_publisher: Option<Value>,
}

/// What a publish does to the stored packument.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishOutcome {
    /// The packument after adding the version.
    Published(Box<Packument>),
    /// The same version with the same integrity is already stored: a client
    /// retry after a lost answer (docs/npm-protocol.md, "Retries"). Nothing changes.
    AlreadyPublished,
}

/// Manifest fields the registry owns besides every `_`-prefixed one: a
/// client's values are dropped, and nmr sets its own where it has one.
const REGISTRY_FIELDS: &[&str] = &["maintainers", "deprecated", "hasInstallScript", "readme"];

/// The `_`-prefixed manifest fields a client may set (npm's own record of
/// the versions it published with).
const CLIENT_UNDERSCORE_FIELDS: &[&str] = &["_nodeVersion", "_npmVersion"];

/// Fields of a version manifest the abbreviated document keeps
/// (docs/npm-protocol.md, "Packuments"), plus `libc`.
pub const ABBREVIATED_FIELDS: &[&str] = &[
    "name",
    "version",
    "deprecated",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "engines",
    "os",
    "cpu",
    "libc",
    "funding",
    "_hasShrinkwrap",
];

/// Top-level fields hoisted from the `latest` version into the full document.
pub const HOISTED_FIELDS: &[&str] = &[
    "description",
    "readme",
    "readmeFilename",
    "homepage",
    "keywords",
    "repository",
    "bugs",
    "license",
    "author",
];

/// An ISO-8601 timestamp with milliseconds, as npm writes `time` entries.
pub fn timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Packument {
    /// An empty packument for a package that has never been published.
    pub fn new(name: &PackageName, now: DateTime<Utc>) -> Packument {
        let mut time = Map::new();
        time.insert("created".into(), Value::String(timestamp(now)));
        time.insert("modified".into(), Value::String(timestamp(now)));
        Packument {
            id: name.to_string(),
            rev: "0-0".into(),
            name: name.to_string(),
            dist_tags: BTreeMap::new(),
            versions: Map::new(),
            time,
            maintainers: Vec::new(),
            readme: None,
        }
    }

    /// Whether the package has no live version (never published, or fully
    /// unpublished): it is then served as 404.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// `time.modified`.
    pub fn modified(&self) -> &str {
        self.time
            .get("modified")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The revision counter of `_rev`.
    fn rev_count(&self) -> u64 {
        self.rev
            .split_once('-')
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0)
    }

    /// Records a change made at `now`: bumps `_rev` and sets `time.modified`.
    pub fn touch(&mut self, now: DateTime<Utc>) {
        let stamp = timestamp(now);
        let hash = hex::encode(Sha1::digest(format!(
            "{}\n{}\n{}",
            self.name, self.rev, stamp
        )));
        self.rev = format!("{}-{}", self.rev_count() + 1, &hash[..32]);
        self.time.insert("modified".into(), Value::String(stamp));
    }

    /// The manifest `latest` points at, if any.
    pub fn latest_manifest(&self) -> Option<&Value> {
        self.dist_tags
            .get("latest")
            .and_then(|v| self.versions.get(v))
    }

    /// Whether `version` was published once and then unpublished.
    fn was_unpublished(&self, version: &str) -> bool {
        let in_tombstone = self
            .time
            .get("unpublished")
            .and_then(|u| u.get("versions"))
            .and_then(Value::as_array)
            .is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(version)));
        in_tombstone || (self.time.contains_key(version) && !self.versions.contains_key(version))
    }

    /// The live versions, parsed, in precedence order (lowest first).
    pub fn sorted_versions(&self) -> Vec<Version> {
        let mut vs: Vec<Version> = self
            .versions
            .keys()
            .filter_map(|v| Version::parse(v).ok())
            .collect();
        vs.sort_by(|a, b| a.cmp_precedence(b));
        vs
    }

    /// The version `latest` should point at when it must be chosen by the
    /// registry: the highest stable version, else the highest prerelease.
    fn default_latest(&self) -> Option<String> {
        let vs = self.sorted_versions();
        vs.iter()
            .rev()
            .find(|v| !v.is_prerelease())
            .or(vs.last())
            .map(|v| v.to_string())
    }

    /// Resolves `spec` the way `npm view NAME@SPEC` or a registry's version
    /// endpoint does: an exact version, then a dist-tag, then the highest
    /// version satisfying the semver range (npm range syntax). `None` when
    /// nothing matches.
    pub fn resolve(&self, spec: &str) -> Option<&str> {
        if let Some((v, _)) = self.versions.get_key_value(spec) {
            return Some(v);
        }
        if let Some(v) = self.dist_tags.get(spec) {
            return self.versions.get_key_value(v).map(|(k, _)| k.as_str());
        }
        let range = nodejs_semver::Range::parse(spec).ok()?;
        self.versions
            .keys()
            .filter_map(|k| nodejs_semver::Version::parse(k).ok().map(|v| (k, v)))
            .filter(|(_, v)| range.satisfies(v))
            .max_by(|(_, a), (_, b)| a.cmp(b))
            .map(|(k, _)| k.as_str())
    }
}

/// Adds `new` to `existing` (or to a new packument), published by `publisher`
/// at `now`.
///
/// Rules: a live version is never replaced (409, unless the integrity is the
/// same, which is a retry: [`PublishOutcome::AlreadyPublished`]); an
/// unpublished version number is refused (409) unless
/// `allow_previous_version`; each requested dist-tag must be valid and points
/// at the new version; `latest` always exists afterwards; registry-owned
/// fields (`_npmUser`, `maintainers`, `dist`, `_id`) are set by nmr.
pub fn publish(
    existing: Option<Packument>,
    name: &PackageName,
    new: NewVersion,
    publisher: &str,
    now: DateTime<Utc>,
    allow_previous_version: bool,
) -> Result<PublishOutcome, ApiError> {
    let v = new.version.as_str();
    let mut doc = existing.unwrap_or_else(|| Packument::new(name, now));
    if let Some(stored) = doc.versions.get(v) {
        let stored_integrity = stored.pointer("/dist/integrity").and_then(Value::as_str);
        if stored_integrity == Some(new.dist.integrity.as_str()) {
            return Ok(PublishOutcome::AlreadyPublished);
        }
        return Err(ApiError::conflict(format!(
            "cannot publish over the previously published version {v} of {name}: bump the version in package.json"
        )));
    }
    if let Some(twin) = precedence_twin(&doc, &new.version) {
        return Err(ApiError::conflict(format!(
            "version {v} of {name} is {twin} with other build metadata, which SemVer (and npm) treat as the same version: bump the version in package.json"
        )));
    }
    if doc.was_unpublished(v) && !allow_previous_version {
        return Err(ApiError::conflict(format!(
            "version {v} of {name} was unpublished and its number cannot be reused: bump the version in package.json"
        )));
    }
    for tag in &new.tags {
        crate::name::validate_tag(tag).map_err(ApiError::bad_request)?;
    }

    if doc.is_empty() {
        // A first publish, or a re-publish after a full unpublish.
        doc.time.remove("unpublished");
        doc.time
            .insert("created".into(), Value::String(timestamp(now)));
        doc.maintainers = vec![json!({ "name": publisher })];
    }
    let mut manifest = new.manifest;
    manifest.retain(|field, _| {
        !REGISTRY_FIELDS.contains(&field.as_str())
            && (!field.starts_with('_') || CLIENT_UNDERSCORE_FIELDS.contains(&field.as_str()))
    });
    manifest.insert(
        "hasInstallScript".into(),
        Value::Bool(new.dist.has_install_script),
    );
    if new.dist.has_shrinkwrap {
        manifest.insert("_hasShrinkwrap".into(), Value::Bool(true));
    }
    manifest.insert("name".into(), Value::String(name.to_string()));
    manifest.insert("version".into(), Value::String(v.to_string()));
    manifest.insert("_id".into(), Value::String(format!("{name}@{v}")));
    let mut npm_user = json!({ "name": publisher });
    if let Some(trusted) = new.trusted_publisher {
        npm_user["trustedPublisher"] = trusted;
    }
    manifest.insert("_npmUser".into(), npm_user);
    manifest.insert("maintainers".into(), Value::Array(doc.maintainers.clone()));
    manifest.insert(
        "dist".into(),
        json!({
            "shasum": new.dist.shasum,
            "integrity": new.dist.integrity,
            "fileCount": new.dist.file_count,
            "unpackedSize": new.dist.unpacked_size,
        }),
    );
    doc.versions.insert(v.to_string(), Value::Object(manifest));
    doc.time
        .insert(v.to_string(), Value::String(timestamp(now)));
    for tag in new.tags {
        doc.dist_tags.insert(tag, v.to_string());
    }
    if !doc.dist_tags.contains_key("latest") {
        doc.dist_tags.insert("latest".into(), v.to_string());
    }
    if doc.dist_tags.get("latest").map(String::as_str) == Some(v) {
        doc.readme = new.readme;
    }
    // Documents stored before readmes moved to the top level: drop theirs.
    for stored in doc.versions.values_mut() {
        if let Value::Object(stored) = stored {
            stored.shift_remove("readme");
        }
    }
    doc.touch(now);
    Ok(PublishOutcome::Published(Box::new(doc)))
}

/// The stored version (live or unpublished) that `version` equals under
/// SemVer precedence, which ignores build metadata, but not as written:
/// `3.0.0+evil` beside `3.0.0`. npm resolves ranges by precedence, so such a
/// twin would shadow its original.
fn precedence_twin(doc: &Packument, version: &Version) -> Option<String> {
    let unpublished = doc
        .time
        .get("unpublished")
        .and_then(|u| u.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    // Valid versions have equal precedence only when they are equal up to
    // their build metadata (`+...`; SemVer forbids leading zeros), so only
    // those are parsed and compared.
    fn core(v: &str) -> &str {
        v.split('+').next().unwrap_or(v)
    }
    let wanted = core(version.as_str());
    doc.versions
        .keys()
        .map(String::as_str)
        .chain(doc.time.keys().map(String::as_str))
        .chain(unpublished)
        .filter(|other| *other != version.as_str() && core(other) == wanted)
        .filter_map(|other| Version::parse(other).ok())
        .find(|other| other.cmp_precedence(version).is_eq())
        .map(|other| other.to_string())
}

/// Applies `npm deprecate` / `npm undeprecate`: for each version in `body`
/// (the `versions` object of the PUT, docs/npm-protocol.md, "deprecate") that carries
/// `deprecated`, a non-empty string sets the message and `""` clears it.
/// Nothing else in the body is taken. A version the package does not have is
/// refused (400): a metadata update never adds versions.
///
/// Returns whether anything changed (the caller then bumps `_rev`).
pub fn deprecate(doc: &mut Packument, body: &Map<String, Value>) -> Result<bool, ApiError> {
    let mut changes = Vec::new();
    for (v, manifest) in body {
        if !doc.versions.contains_key(v) {
            return Err(ApiError::bad_request(format!(
                "version {v} does not exist in {}: a metadata update cannot add versions, use npm publish",
                doc.name
            )));
        }
        match manifest.get("deprecated") {
            None => {}
            Some(Value::String(message)) => changes.push((v.clone(), message.clone())),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "versions[{v:?}].deprecated must be a string"
                )));
            }
        }
    }
    let mut changed = false;
    for (v, message) in changes {
        let Some(Value::Object(stored)) = doc.versions.get_mut(&v) else {
            continue;
        };
        let current = stored.get("deprecated").and_then(Value::as_str);
        if message.is_empty() {
            changed |= stored.shift_remove("deprecated").is_some();
        } else if current != Some(message.as_str()) {
            stored.insert("deprecated".into(), Value::String(message));
            changed = true;
        }
    }
    Ok(changed)
}

/// Removes every stored version that `keep` (the version keys of the
/// unpublish PUT body, docs/npm-protocol.md, "unpublish") lacks. The tombstone stays in
/// `time`; dist-tags pointing at a removed version are dropped, and if
/// `latest` was removed it moves to the highest stable version left (not
/// whatever the client computed). A body naming a version the package does
/// not have is refused (400). Removing the last version unpublishes the
/// package ([`unpublish_all`]).
///
/// Returns the removed versions, whose tarballs the caller deletes after
/// committing.
pub fn unpublish_versions(
    doc: &mut Packument,
    keep: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Version>, ApiError> {
    if let Some(unknown) = keep.iter().find(|v| !doc.versions.contains_key(*v)) {
        return Err(ApiError::bad_request(format!(
            "version {unknown} does not exist in {}: an unpublish cannot add versions",
            doc.name
        )));
    }
    let removed: Vec<String> = doc
        .versions
        .keys()
        .filter(|v| !keep.contains(v))
        .cloned()
        .collect();
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    if removed.len() == doc.versions.len() {
        return Ok(unpublish_all(doc, now));
    }
    for v in &removed {
        doc.versions.remove(v);
    }
    doc.dist_tags.retain(|_, v| !removed.contains(v));
    if !doc.dist_tags.contains_key("latest")
        && let Some(latest) = doc.default_latest()
    {
        doc.dist_tags.insert("latest".into(), latest);
    }
    doc.touch(now);
    Ok(removed
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect())
}

/// Unpublishes the whole package: no versions or dist-tags remain, and
/// `time.unpublished = {time, versions}` records what was removed so none of
/// those numbers is reused. Returns the removed versions.
pub fn unpublish_all(doc: &mut Packument, now: DateTime<Utc>) -> Vec<Version> {
    let removed: Vec<String> = doc.versions.keys().cloned().collect();
    let mut all_removed: Vec<Value> = doc
        .time
        .get("unpublished")
        .and_then(|u| u.get("versions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    all_removed.extend(removed.iter().map(|v| Value::String(v.clone())));
    doc.versions.clear();
    doc.dist_tags.clear();
    doc.time.insert(
        "unpublished".into(),
        json!({ "time": timestamp(now), "versions": all_removed }),
    );
    doc.touch(now);
    removed
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect()
}

/// `npm dist-tag add`: points `tag` at `version`. The tag must be valid
/// ([`crate::name::validate_tag`], 400) and the version live (404).
pub fn set_tag(
    doc: &mut Packument,
    tag: &str,
    version: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    crate::name::validate_tag(tag).map_err(ApiError::bad_request)?;
    if !doc.versions.contains_key(version) {
        return Err(ApiError::not_found(format!(
            "version {version} of {} does not exist",
            doc.name
        )));
    }
    if doc.dist_tags.get(tag).map(String::as_str) != Some(version) {
        doc.dist_tags.insert(tag.to_string(), version.to_string());
        doc.touch(now);
    }
    Ok(())
}

/// `npm dist-tag rm`: removes `tag`. `latest` cannot be removed (400: npm
/// needs it); an absent tag is 404.
pub fn remove_tag(doc: &mut Packument, tag: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
    if tag == "latest" {
        return Err(ApiError::bad_request(
            "the latest dist-tag cannot be removed: point it at another version with npm dist-tag add",
        ));
    }
    if doc.dist_tags.remove(tag).is_none() {
        return Err(ApiError::not_found(format!(
            "{tag} is not a dist-tag of {}",
            doc.name
        )));
    }
    doc.touch(now);
    Ok(())
}

/// A version manifest as served: the stored one with `dist.tarball` set to
/// `{public_url}{tarball path}` and without `readme` (served at the top
/// level only).
pub fn render_version(name: &PackageName, manifest: &Value, public_url: &str) -> Value {
    let mut manifest = manifest.clone();
    let version = manifest
        .get("version")
        .and_then(Value::as_str)
        .and_then(|v| Version::parse(v).ok());
    if let (Value::Object(m), Some(version)) = (&mut manifest, version) {
        m.shift_remove("readme");
        if m.get("hasInstallScript") == Some(&Value::Bool(false)) {
            m.shift_remove("hasInstallScript");
        }
        if let Some(Value::Object(dist)) = m.get_mut("dist") {
            dist.insert(
                "tarball".into(),
                Value::String(format!("{public_url}{}", name.tarball_path(&version))),
            );
        }
    }
    manifest
}

/// The full packument as served by `GET /{pkg}`: the canonical document with
/// rendered version manifests and the `latest` version's `description`,
/// `readme`, `repository` etc. at the top level.
pub fn render_full(name: &PackageName, doc: &Packument, public_url: &str) -> Value {
    let mut out = Map::new();
    out.insert("_id".into(), json!(doc.id));
    out.insert("_rev".into(), json!(doc.rev));
    out.insert("name".into(), json!(doc.name));
    let latest = doc
        .dist_tags
        .get("latest")
        .and_then(|v| doc.versions.get(v))
        .and_then(Value::as_object);
    if let Some(latest) = latest {
        for field in HOISTED_FIELDS {
            if let Some(value) = latest.get(*field) {
                out.insert((*field).into(), value.clone());
            }
        }
    }
    if let Some(readme) = &doc.readme {
        out.insert("readme".into(), Value::String(readme.clone()));
    }
    out.insert("dist-tags".into(), json!(doc.dist_tags));
    let versions: Map<String, Value> = doc
        .versions
        .iter()
        .map(|(v, m)| (v.clone(), render_version(name, m, public_url)))
        .collect();
    out.insert("versions".into(), Value::Object(versions));
    out.insert("time".into(), Value::Object(doc.time.clone()));
    out.insert("maintainers".into(), Value::Array(doc.maintainers.clone()));
    Value::Object(out)
}

/// The abbreviated ("corgi") document served for
/// `Accept: application/vnd.npm.install-v1+json`: `name`, `modified`,
/// `dist-tags`, and per version only the install fields, plus
/// `hasInstallScript` when a `preinstall`, `install` or `postinstall` script
/// exists (docs/npm-protocol.md, "Packuments").
pub fn render_abbreviated(name: &PackageName, doc: &Packument, public_url: &str) -> Value {
    let versions: Map<String, Value> = doc
        .versions
        .iter()
        .map(|(v, manifest)| {
            let mut out = Map::new();
            for field in ABBREVIATED_FIELDS {
                if let Some(value) = manifest.get(*field) {
                    out.insert((*field).into(), value.clone());
                }
            }
            let rendered = render_version(name, manifest, public_url);
            if let Some(dist) = rendered.get("dist") {
                out.insert("dist".into(), dist.clone());
            }
            // Computed from the tarball at publish; versions stored before
            // that fall back to their manifest's scripts.
            let has_install_script = match manifest.get("hasInstallScript") {
                Some(computed) => computed == &Value::Bool(true),
                None => manifest
                    .get("scripts")
                    .and_then(Value::as_object)
                    .is_some_and(|s| {
                        ["preinstall", "install", "postinstall"]
                            .iter()
                            .any(|k| s.contains_key(*k))
                    }),
            };
            if has_install_script {
                out.insert("hasInstallScript".into(), Value::Bool(true));
            }
            (v.clone(), Value::Object(out))
        })
        .collect();
    json!({
        "name": doc.name,
        "modified": doc.modified(),
        "dist-tags": doc.dist_tags,
        "versions": versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> PackageName {
        PackageName::parse("@acme/widget").unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn new_version(v: &str, tags: &[&str]) -> NewVersion {
        let manifest = json!({
            "name": "@acme/widget", "version": v, "description": format!("widget {v}"),
            "readme": format!("# widget {v}"), "dependencies": {"@acme/base": "^1.0.0"},
            "scripts": {"postinstall": "node x.js", "test": "true"},
            "_npmUser": {"name": "mallory"}, "maintainers": [{"name": "mallory"}],
            "dist": {"tarball": "http://evil/x.tgz", "integrity": "sha512-client", "shasum": "client"},
            "_resolved": "http://evil/x.tgz", "_integrity": "sha512-client", "_from": "evil",
            "_shasum": "client", "_nodeVersion": "20.20.2", "_npmVersion": "11.19.1",
            "hasInstallScript": false
        });
        NewVersion {
            version: Version::parse(v).unwrap(),
            manifest: manifest.as_object().unwrap().clone(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            readme: Some(format!("# widget {v}")),
            trusted_publisher: None,
            dist: DistInfo {
                shasum: format!("sha1-of-{v}"),
                integrity: format!("sha512-of-{v}"),
                file_count: 2,
                unpacked_size: 100,
                has_install_script: true,
                has_shrinkwrap: false,
            },
        }
    }

    fn published(existing: Option<Packument>, v: &str, tags: &[&str], t: i64) -> Packument {
        match publish(
            existing,
            &name(),
            new_version(v, tags),
            "alice",
            at(t),
            false,
        )
        .unwrap()
        {
            PublishOutcome::Published(doc) => *doc,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_publish_creates_the_packument() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        assert_eq!(doc.id, "@acme/widget");
        assert!(doc.rev.starts_with("1-"), "{}", doc.rev);
        assert_eq!(doc.dist_tags["latest"], "1.0.0");
        assert_eq!(doc.time["created"], doc.time["1.0.0"]);
        assert_eq!(doc.maintainers, vec![json!({"name": "alice"})]);
        let m = &doc.versions["1.0.0"];
        assert_eq!(m["_id"], "@acme/widget@1.0.0");
        assert_eq!(m["_npmUser"], json!({"name": "alice"}));
        assert_eq!(m["dist"]["integrity"], "sha512-of-1.0.0");
        assert_eq!(m["dist"]["shasum"], "sha1-of-1.0.0");
        assert!(m["dist"].get("tarball").is_none());
    }

    #[test]
    fn second_version_merges_and_tags_merge() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let rev1 = doc.rev.clone();
        let doc = published(Some(doc), "2.0.0-beta.1", &["beta"], 10);
        assert_eq!(doc.versions.len(), 2);
        assert_eq!(doc.dist_tags["latest"], "1.0.0");
        assert_eq!(doc.dist_tags["beta"], "2.0.0-beta.1");
        assert!(doc.rev.starts_with("2-") && doc.rev != rev1);
        assert_eq!(doc.time["modified"], doc.time["2.0.0-beta.1"]);
        assert_ne!(doc.time["created"], doc.time["modified"]);
    }

    #[test]
    fn first_publish_with_only_a_non_latest_tag_still_gets_latest() {
        let doc = published(None, "1.0.0-rc.1", &["next"], 0);
        assert_eq!(doc.dist_tags["latest"], "1.0.0-rc.1");
        assert_eq!(doc.dist_tags["next"], "1.0.0-rc.1");
    }

    #[test]
    fn existing_version_conflicts_unless_identical() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let same = publish(
            Some(doc.clone()),
            &name(),
            new_version("1.0.0", &["latest"]),
            "alice",
            at(5),
            false,
        );
        assert_eq!(same.unwrap(), PublishOutcome::AlreadyPublished);
        let mut other = new_version("1.0.0", &["latest"]);
        other.dist.integrity = "sha512-different".into();
        let err = publish(Some(doc), &name(), other, "alice", at(5), false).unwrap_err();
        assert_eq!(err.status, 409);
        assert!(err.message.contains("previously published version 1.0.0"));
    }

    #[test]
    fn unpublished_versions_are_never_reused_unless_allowed() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let mut doc = published(Some(doc), "1.1.0", &["latest"], 1);
        let removed = unpublish_versions(&mut doc, &["1.0.0".into()], at(2)).unwrap();
        assert_eq!(removed, vec![Version::parse("1.1.0").unwrap()]);
        assert!(doc.time.contains_key("1.1.0"), "tombstone kept");
        let err = publish(
            Some(doc.clone()),
            &name(),
            new_version("1.1.0", &["latest"]),
            "alice",
            at(3),
            false,
        )
        .unwrap_err();
        assert_eq!(err.status, 409);
        assert!(err.message.contains("was unpublished"));
        assert!(matches!(
            publish(
                Some(doc),
                &name(),
                new_version("1.1.0", &["latest"]),
                "alice",
                at(3),
                true
            ),
            Ok(PublishOutcome::Published(_))
        ));
    }

    #[test]
    fn registry_owned_fields_are_not_taken_from_the_client() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let m = &doc.versions["1.0.0"];
        assert_eq!(m["maintainers"], json!([{"name": "alice"}]));
        assert_eq!(m["_npmUser"]["name"], "alice");
        assert_ne!(m["dist"]["integrity"], "sha512-client");
        for claim in ["_resolved", "_integrity", "_from", "_shasum", "readme"] {
            assert!(m.get(claim).is_none(), "{claim} kept");
        }
        assert_eq!(m["_nodeVersion"], "20.20.2");
        assert_eq!(m["_npmVersion"], "11.19.1");
        // Computed from the tarball, not the client's false.
        assert_eq!(m["hasInstallScript"], true);
    }

    #[test]
    fn build_metadata_twins_are_refused() {
        let doc = published(None, "3.0.0", &["latest"], 0);
        for twin in ["3.0.0+evil", "3.0.0+1"] {
            let err = publish(
                Some(doc.clone()),
                &name(),
                new_version(twin, &["latest"]),
                "m",
                at(1),
                false,
            )
            .unwrap_err();
            assert_eq!(err.status, 409, "{twin}");
            assert!(err.message.contains("build metadata"), "{err}");
        }
        // An unpublished version's twin too, and whatever the setting.
        let doc = published(Some(doc), "3.1.0+a", &["latest"], 2);
        let mut gone = doc.clone();
        unpublish_versions(&mut gone, &["3.0.0".to_string()], at(3)).unwrap();
        let err = publish(
            Some(gone),
            &name(),
            new_version("3.1.0+b", &["latest"]),
            "m",
            at(4),
            true,
        )
        .unwrap_err();
        assert_eq!(err.status, 409);
        // Another prerelease or patch is no twin.
        published(Some(doc), "3.0.1-rc.1+x", &["next"], 5);
    }

    #[test]
    fn only_the_latest_readme_is_kept_and_at_the_top() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let doc = published(Some(doc), "2.0.0-beta.1", &["beta"], 1);
        assert_eq!(doc.readme.as_deref(), Some("# widget 1.0.0"));
        let doc = published(Some(doc), "2.0.0", &["latest"], 2);
        assert_eq!(doc.readme.as_deref(), Some("# widget 2.0.0"));
        assert!(doc.versions.values().all(|m| m.get("readme").is_none()));
        let full = render_full(&name(), &doc, "http://r/");
        assert_eq!(full["readme"], "# widget 2.0.0");
    }

    #[test]
    fn semver_range_tags_are_refused() {
        let err = publish(
            None,
            &name(),
            new_version("1.0.0", &["1.x"]),
            "a",
            at(0),
            false,
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn unpublishing_latest_moves_it_to_the_highest_stable() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let doc = published(Some(doc), "2.0.0-beta.1", &["beta"], 1);
        let mut doc = published(Some(doc), "1.1.0", &["latest"], 2);
        unpublish_versions(&mut doc, &["1.0.0".into(), "2.0.0-beta.1".into()], at(3)).unwrap();
        assert_eq!(doc.dist_tags["latest"], "1.0.0");
        assert_eq!(doc.dist_tags["beta"], "2.0.0-beta.1");
    }

    #[test]
    fn unpublish_cannot_add_versions() {
        let mut doc = published(None, "1.0.0", &["latest"], 0);
        let err =
            unpublish_versions(&mut doc, &["1.0.0".into(), "9.9.9".into()], at(1)).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(doc.versions.len(), 1);
    }

    #[test]
    fn removing_every_version_leaves_a_tombstone() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let mut doc = published(Some(doc), "1.1.0", &["latest"], 1);
        let removed = unpublish_versions(&mut doc, &[], at(2)).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(doc.is_empty() && doc.dist_tags.is_empty());
        assert_eq!(
            doc.time["unpublished"]["versions"],
            json!(["1.0.0", "1.1.0"])
        );
        let again = publish(
            Some(doc.clone()),
            &name(),
            new_version("1.0.0", &["latest"]),
            "a",
            at(3),
            false,
        );
        assert_eq!(again.unwrap_err().status, 409);
        let doc = published(Some(doc), "2.0.0", &["latest"], 4);
        assert!(doc.time.get("unpublished").is_none());
        assert_eq!(doc.dist_tags["latest"], "2.0.0");
    }

    #[test]
    fn deprecate_sets_and_clears_messages_only() {
        let mut doc = published(None, "1.0.0", &["latest"], 0);
        let body = json!({"1.0.0": {"deprecated": "use 2", "dist": {"integrity": "evil"}}});
        assert!(deprecate(&mut doc, body.as_object().unwrap()).unwrap());
        assert_eq!(doc.versions["1.0.0"]["deprecated"], "use 2");
        assert_eq!(
            doc.versions["1.0.0"]["dist"]["integrity"],
            "sha512-of-1.0.0"
        );
        let body = json!({"1.0.0": {"deprecated": "use 2"}});
        assert!(!deprecate(&mut doc, body.as_object().unwrap()).unwrap());
        let body = json!({"1.0.0": {"deprecated": ""}});
        assert!(deprecate(&mut doc, body.as_object().unwrap()).unwrap());
        assert!(doc.versions["1.0.0"].get("deprecated").is_none());
        let body = json!({"3.0.0": {"deprecated": "x"}});
        assert_eq!(
            deprecate(&mut doc, body.as_object().unwrap())
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn dist_tags_add_and_remove() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let mut doc = published(Some(doc), "1.1.0", &["latest"], 1);
        set_tag(&mut doc, "stable", "1.0.0", at(2)).unwrap();
        assert_eq!(doc.dist_tags["stable"], "1.0.0");
        assert_eq!(
            set_tag(&mut doc, "other", "5.0.0", at(2))
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            set_tag(&mut doc, "^1", "1.0.0", at(2)).unwrap_err().status,
            400
        );
        remove_tag(&mut doc, "stable", at(3)).unwrap();
        assert_eq!(
            remove_tag(&mut doc, "stable", at(3)).unwrap_err().status,
            404
        );
        assert_eq!(
            remove_tag(&mut doc, "latest", at(3)).unwrap_err().status,
            400
        );
    }

    #[test]
    fn resolve_versions_tags_and_ranges() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let doc = published(Some(doc), "1.2.0", &["latest"], 1);
        let doc = published(Some(doc), "2.0.0-beta.1", &["beta"], 2);
        assert_eq!(doc.resolve("1.0.0"), Some("1.0.0"));
        assert_eq!(doc.resolve("latest"), Some("1.2.0"));
        assert_eq!(doc.resolve("beta"), Some("2.0.0-beta.1"));
        assert_eq!(doc.resolve("^1.0.0"), Some("1.2.0"));
        assert_eq!(doc.resolve("1.x"), Some("1.2.0"));
        assert_eq!(doc.resolve(">=1.0.0 <1.2.0"), Some("1.0.0"));
        assert_eq!(
            doc.resolve("*"),
            Some("1.2.0"),
            "prereleases excluded from ranges"
        );
        assert_eq!(doc.resolve("^3"), None);
        assert_eq!(doc.resolve("nope"), None);
    }

    #[test]
    fn full_document_hoists_latest_and_writes_tarball_urls() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let doc = published(Some(doc), "1.1.0", &["next"], 1);
        let full = render_full(&name(), &doc, "https://nmr.example/npm/");
        assert_eq!(full["description"], "widget 1.0.0");
        assert_eq!(full["readme"], "# widget 1.0.0");
        assert_eq!(full["_rev"], doc.rev.as_str());
        assert_eq!(
            full["versions"]["1.1.0"]["dist"]["tarball"],
            "https://nmr.example/npm/@acme/widget/-/widget-1.1.0.tgz"
        );
        assert!(full["versions"]["1.1.0"].get("readme").is_none());
        assert_eq!(full["time"]["1.1.0"], doc.time["1.1.0"]);
    }

    #[test]
    fn abbreviated_document_keeps_install_fields_only() {
        let doc = published(None, "1.0.0", &["latest"], 0);
        let abbr = render_abbreviated(&name(), &doc, "http://r/");
        assert_eq!(abbr["modified"], doc.time["modified"]);
        let v = abbr["versions"]["1.0.0"].as_object().unwrap();
        let mut keys: Vec<&str> = v.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "dependencies",
                "dist",
                "hasInstallScript",
                "name",
                "version"
            ]
        );
        assert_eq!(
            v["dist"]["tarball"],
            "http://r/@acme/widget/-/widget-1.0.0.tgz"
        );
        assert!(abbr.get("time").is_none() && abbr.get("readme").is_none());
    }
}
