//! The manifest is the tarball's `package.json`: npm's publish-time
//! normalisation of a `package.json`, and the comparison of the
//! install-relevant fields of a publish's version manifest with those of the
//! `package.json` inside its tarball.
//!
//! `npm publish` sends the manifest npm computed from the package directory
//! (`@npmcli/package-json`'s `fix` steps, then its `prepare` steps), while
//! the tarball carries the `package.json` file as written. Installers read
//! both: the resolver reads the packument, the extractor the tarball. A
//! registry that stores a manifest differing from the tarball lets a
//! publisher show one thing and install another ("manifest confusion",
//! docs/security.md). So nmr applies the same normalisation to the
//! tarball's `package.json` ([`normalise`]) and refuses a publish whose
//! manifest differs in any field in [`INSTALL_FIELDS`] ([`compare`]).
//!
//! The steps reproduced (docs/npm-protocol.md, "publish normalisation"):
//!
//! - `version` cleaned (`v1.0.0`, `=1.0.0` → `1.0.0`);
//! - `bundledDependencies` renamed `bundleDependencies`; `true` → the
//!   dependency names, `false` → `[]`, an object → its keys, anything else
//!   dropped; non-string members dropped; a bundled name missing from
//!   `dependencies` added there as `"*"`;
//! - `dependencies` and `optionalDependencies` given as a string or an
//!   array become objects; non-string `dependencies` values are dropped;
//! - `scripts`: not an object → dropped; non-string entries dropped; a
//!   leading `node_modules/.bin/` removed; with a `*.gyp` file at the
//!   package root and neither `install` nor `preinstall` (and `gypfile` not
//!   `false`): `install: "node-gyp rebuild"` and `gypfile: true`;
//! - `bin`: from `directories.bin` (every entry under it) when there is no
//!   `bin`; a string → `{basename(name): path}`; an array →
//!   `{basename(path): path}`; names and paths made relative and safe; an
//!   empty `bin` dropped.
//!
//! Dependency specs npm rewrites with hosted-git-info (`user/repo`,
//! `github:user/repo`, git URLs of GitHub, GitLab and Bitbucket) are
//! compared by the repository and committish they name.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The fields whose value decides what installing the package does.
pub const INSTALL_FIELDS: &[&str] = &[
    "name",
    "version",
    "dependencies",
    "optionalDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "bundleDependencies",
    "scripts.preinstall",
    "scripts.install",
    "scripts.postinstall",
    "scripts.prepare",
    "bin",
    "os",
    "cpu",
    "libc",
    "engines",
    "gypfile",
];

/// What of the tarball the normalisation needs besides `package.json`.
#[derive(Debug, Default, Clone)]
pub struct PackageFiles {
    /// Paths of every entry, relative to the package root (`/`-separated).
    pub paths: Vec<String>,
}

impl PackageFiles {
    fn has_gyp_at_root(&self) -> bool {
        self.paths
            .iter()
            .any(|p| !p.contains('/') && p.ends_with(".gyp"))
    }
}

/// `path` with `\` and `:` as `/`, resolved against the package root the way
/// npm's `secureAndUnixifyPath` does: `..` cannot climb above the root, the
/// result is relative, and `.` stands for the root itself.
pub fn secure_path(path: &str) -> String {
    let unixified = path.replace(['\\', ':'], "/");
    let mut parts: Vec<&str> = Vec::new();
    for part in unixified.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A copy of `package_json` (a tarball's) as `npm publish` would have
/// normalised it for its manifest; `files` are the tarball's entries.
pub fn normalise(package_json: &Map<String, Value>, files: &PackageFiles) -> Map<String, Value> {
    let mut data = package_json.clone();
    if let Some(Value::String(v)) = data.get("version") {
        let cleaned = v.trim().trim_start_matches(['=', 'v']).trim().to_string();
        data.insert("version".into(), Value::String(cleaned));
    }
    normalise_bundled(&mut data);
    normalise_dependencies(&mut data);
    normalise_scripts(&mut data, files);
    normalise_bin(&mut data, files);
    add_bundled_to_dependencies(&mut data);
    data
}

fn normalise_bundled(data: &mut Map<String, Value>) {
    if let Some(bundled) = data.remove("bundledDependencies")
        && !data.contains_key("bundleDependencies")
    {
        data.insert("bundleDependencies".into(), bundled);
    }
    let names = |v: &Value| -> Vec<Value> {
        v.as_object()
            .map(|o| o.keys().map(|k| Value::String(k.clone())).collect())
            .unwrap_or_default()
    };
    let normalised = match data.get("bundleDependencies") {
        None => return,
        Some(Value::Bool(true)) => Some(names(data.get("dependencies").unwrap_or(&Value::Null))),
        Some(Value::Bool(false)) => Some(Vec::new()),
        Some(Value::Array(list)) => Some(list.iter().filter(|v| v.is_string()).cloned().collect()),
        Some(object @ Value::Object(_)) => Some(names(object)),
        Some(_) => None,
    };
    match normalised {
        Some(list) => data.insert("bundleDependencies".into(), Value::Array(list)),
        None => data.remove("bundleDependencies"),
    };
}

fn add_bundled_to_dependencies(data: &mut Map<String, Value>) {
    let Some(Value::Array(bundled)) = data.get("bundleDependencies").cloned() else {
        return;
    };
    if bundled.is_empty() {
        return;
    }
    let deps = data
        .entry("dependencies")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(deps) = deps {
        for name in bundled.iter().filter_map(Value::as_str) {
            deps.entry(name)
                .or_insert_with(|| Value::String("*".into()));
        }
    }
}

fn normalise_dependencies(data: &mut Map<String, Value>) {
    for field in ["dependencies", "optionalDependencies"] {
        let list: Option<Vec<String>> = match data.get(field) {
            Some(Value::String(s)) => Some(
                s.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        };
        if let Some(list) = list {
            let mut object = Map::new();
            for dep in list {
                let dep = dep.trim();
                let split = dep
                    .char_indices()
                    .skip(1)
                    .find(|(_, c)| matches!(c, '@' | ' ' | '>' | '<' | '='))
                    .map_or(dep.len(), |(i, _)| i);
                let (name, spec) = dep.split_at(split);
                let spec = spec.trim_start_matches('@').trim();
                object.insert(name.to_string(), Value::String(spec.to_string()));
            }
            data.insert(field.into(), Value::Object(object));
        }
    }
    match data.get_mut("dependencies") {
        Some(Value::Object(deps)) => deps.retain(|_, v| v.is_string()),
        Some(_) => {
            data.remove("dependencies");
        }
        None => {}
    }
}

fn normalise_scripts(data: &mut Map<String, Value>, files: &PackageFiles) {
    match data.get_mut("scripts") {
        Some(Value::Object(scripts)) => {
            scripts.retain(|_, v| v.is_string());
            for value in scripts.values_mut() {
                if let Value::String(script) = value {
                    let stripped = [
                        "./node_modules/.bin/",
                        ".\\node_modules\\.bin\\",
                        "node_modules/.bin/",
                        "node_modules\\.bin\\",
                    ]
                    .iter()
                    .find_map(|prefix| script.strip_prefix(prefix));
                    if let Some(stripped) = stripped {
                        *script = stripped.to_string();
                    }
                }
            }
        }
        Some(_) => {
            data.remove("scripts");
        }
        None => {}
    }
    let has = |name: &str| data.get("scripts").and_then(|s| s.get(name)).is_some();
    if !has("install")
        && !has("preinstall")
        && data.get("gypfile") != Some(&Value::Bool(false))
        && files.has_gyp_at_root()
    {
        let scripts = data
            .entry("scripts")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(scripts) = scripts {
            scripts.insert("install".into(), Value::String("node-gyp rebuild".into()));
        }
        data.insert("gypfile".into(), Value::Bool(true));
    }
}

fn normalise_bin(data: &mut Map<String, Value>, files: &PackageFiles) {
    let bin_dir = data
        .get("directories")
        .and_then(|d| d.get("bin"))
        .and_then(Value::as_str)
        .map(secure_path);
    if let (Some(dir), None) = (bin_dir, data.get("bin")) {
        let prefix = format!("{dir}/");
        let mut bin = Map::new();
        for path in &files.paths {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            if rest.is_empty() || rest.starts_with('.') {
                continue;
            }
            let name = basename(rest).to_string();
            bin.insert(name, Value::String(format!("{dir}/{}", secure_path(rest))));
        }
        data.insert("bin".into(), Value::Object(bin));
        return;
    }
    let name = data
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let raw: Vec<(String, Value)> = match data.remove("bin") {
        Some(Value::String(path)) if !name.is_empty() => vec![(name, Value::String(path))],
        Some(Value::Array(paths)) => paths
            .into_iter()
            .filter_map(|p| {
                let s = p.as_str()?.to_string();
                Some((basename(&s.replace('\\', "/")).to_string(), p))
            })
            .collect(),
        Some(Value::Object(object)) => object.into_iter().collect(),
        _ => return,
    };
    let mut bin = Map::new();
    for (key, target) in raw {
        let Value::String(target) = target else {
            continue;
        };
        let base = basename(&secure_path(&key)).to_string();
        let target = secure_path(&target);
        if base.is_empty() || base == "." || target == "." {
            continue;
        }
        bin.insert(base, Value::String(target));
    }
    if !bin.is_empty() {
        data.insert("bin".into(), Value::Object(bin));
    }
}

/// `owner/repo#committish` for a dependency spec naming a repository on
/// GitHub, GitLab or Bitbucket in any of the forms npm's hosted-git-info
/// reads, else `None`.
pub fn hosted_identity(spec: &str) -> Option<String> {
    let (spec, committish) = match spec.split_once('#') {
        Some((s, c)) => (s, c),
        None => (spec, ""),
    };
    let (host, path) = if let Some((prefix, rest)) = spec.split_once(':')
        && matches!(prefix, "github" | "gitlab" | "bitbucket")
    {
        (prefix.to_string(), rest.to_string())
    } else if let Some((_, rest)) = spec.split_once("://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (authority, path) = rest.split_once(['/', ':'])?;
        let host = authority.split(':').next()?.trim_start_matches("www.");
        let name = host.split('.').next()?;
        if !matches!(host, "github.com" | "gitlab.com" | "bitbucket.org") {
            return None;
        }
        (name.to_string(), path.to_string())
    } else if let Some(rest) = spec.strip_prefix("git@") {
        let (host, path) = rest.split_once(':')?;
        let name = host.split('.').next()?;
        if !matches!(host, "github.com" | "gitlab.com" | "bitbucket.org") {
            return None;
        }
        (name.to_string(), path.to_string())
    } else if !spec.starts_with('@')
        && spec.matches('/').count() == 1
        && !spec.contains(':')
        && !spec.starts_with('.')
        && !spec.starts_with('/')
    {
        ("github".to_string(), spec.to_string())
    } else {
        return None;
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, repo) = path.split_once('/')?;
    if owner.is_empty() || repo.is_empty() || repo.contains('/') {
        return None;
    }
    Some(format!(
        "{host}:{}/{}#{committish}",
        owner.to_ascii_lowercase(),
        repo.to_ascii_lowercase()
    ))
}

/// The value of a dotted `field` (`scripts.install`) in `data`.
fn field<'a>(data: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    match name.split_once('.') {
        Some((outer, inner)) => data.get(outer)?.get(inner),
        None => data.get(name),
    }
}

/// An absent field and an empty object or array mean the same to npm.
fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn same(name: &str, manifest: Option<&Value>, tarball: Option<&Value>) -> bool {
    if is_empty(manifest) && is_empty(tarball) {
        return true;
    }
    if manifest == tarball {
        return true;
    }
    // Dependency maps: equal entry by entry, hosted specs by what they name.
    if name.ends_with("ependencies")
        && let (Some(Value::Object(m)), Some(Value::Object(t))) = (manifest, tarball)
    {
        return m.len() == t.len()
            && m.iter().all(|(dep, spec)| {
                t.get(dep).is_some_and(|other| {
                    spec == other
                        || matches!((spec.as_str().and_then(hosted_identity), other.as_str().and_then(hosted_identity)),
                            (Some(a), Some(b)) if a == b)
                })
            });
    }
    false
}

fn shown(value: Option<&Value>) -> String {
    let text = value.map_or("nothing".to_string(), Value::to_string);
    if text.len() > 200 {
        format!("{}…", &text[..text.floor_char_boundary(200)])
    } else {
        text
    }
}

/// Refuses (400, naming the field and both values) a publish whose
/// `manifest` differs from the `normalised` tarball `package.json` in an
/// install-relevant field.
pub fn compare(
    manifest: &Map<String, Value>,
    normalised: &Map<String, Value>,
) -> Result<(), ApiError> {
    for name in INSTALL_FIELDS {
        let (m, t) = (field(manifest, name), field(normalised, name));
        if !same(name, m, t) {
            return Err(ApiError::bad_request(format!(
                "the manifest's {name} is {} but the tarball's package.json (as npm publish normalises it) has {}: npm installs from both, so they must agree; publish with npm, or fix the manifest",
                shown(m),
                shown(t)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn files(paths: &[&str]) -> PackageFiles {
        PackageFiles {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn paths_are_made_safe_as_npm_does() {
        assert_eq!(secure_path("./cli.js"), "cli.js");
        assert_eq!(secure_path("../../etc/passwd"), "etc/passwd");
        assert_eq!(secure_path("bin\\tool"), "bin/tool");
        assert_eq!(secure_path("/"), ".");
    }

    #[test]
    fn bin_forms_become_objects() {
        let n = |v: Value, f: &[&str]| normalise(&obj(v), &files(f))["bin"].clone();
        assert_eq!(
            n(json!({"name": "@acme/cli", "bin": "./cli.js"}), &[]),
            json!({"cli": "cli.js"})
        );
        assert_eq!(
            n(json!({"name": "x", "bin": ["./a/b.js"]}), &[]),
            json!({"b.js": "a/b.js"})
        );
        assert_eq!(
            n(
                json!({"name": "x", "directories": {"bin": "./bin"}}),
                &["package.json", "bin/tool-a", "bin/.hidden", "lib/x.js"]
            ),
            json!({"tool-a": "bin/tool-a"})
        );
        assert!(
            normalise(&obj(json!({"name": "x", "bin": {}})), &files(&[]))
                .get("bin")
                .is_none()
        );
    }

    #[test]
    fn gyp_files_add_the_install_script() {
        let n = normalise(&obj(json!({"name": "x"})), &files(&["binding.gyp"]));
        assert_eq!(n["scripts"]["install"], "node-gyp rebuild");
        assert_eq!(n["gypfile"], true);
        let n = normalise(
            &obj(json!({"name": "x", "scripts": {"preinstall": "a"}})),
            &files(&["binding.gyp"]),
        );
        assert!(n["scripts"].get("install").is_none());
        let n = normalise(
            &obj(json!({"name": "x", "gypfile": false})),
            &files(&["binding.gyp"]),
        );
        assert!(n.get("scripts").is_none());
        let n = normalise(&obj(json!({"name": "x"})), &files(&["src/binding.gyp"]));
        assert!(n.get("scripts").is_none());
    }

    #[test]
    fn bundled_dependencies_are_normalised() {
        let n = normalise(
            &obj(json!({"bundledDependencies": ["a", 3], "dependencies": {"b": "1"}})),
            &files(&[]),
        );
        assert_eq!(n["bundleDependencies"], json!(["a"]));
        assert_eq!(n["dependencies"], json!({"b": "1", "a": "*"}));
        let n = normalise(
            &obj(json!({"bundleDependencies": true, "dependencies": {"b": "1"}})),
            &files(&[]),
        );
        assert_eq!(n["bundleDependencies"], json!(["b"]));
        let n = normalise(&obj(json!({"bundleDependencies": false})), &files(&[]));
        assert_eq!(n["bundleDependencies"], json!([]));
    }

    #[test]
    fn dependency_lists_and_hosted_specs() {
        let n = normalise(&obj(json!({"dependencies": "a@1 b"})), &files(&[]));
        assert_eq!(n["dependencies"], json!({"a": "1", "b": ""}));
        for (x, y) in [
            ("github:Acme/Lib", "git+ssh://git@github.com/acme/lib.git"),
            ("acme/lib#v1", "git+https://github.com/acme/lib.git#v1"),
            ("git@github.com:acme/lib.git", "github:acme/lib"),
        ] {
            assert_eq!(hosted_identity(x), hosted_identity(y), "{x} {y}");
            assert!(hosted_identity(x).is_some());
        }
        assert_ne!(
            hosted_identity("acme/lib#v1"),
            hosted_identity("acme/lib#v2")
        );
        assert_eq!(hosted_identity("^1.0.0"), None);
        assert_eq!(hosted_identity("npm:@acme/base@^1"), None);
    }

    #[test]
    fn install_relevant_differences_are_refused() {
        let tarball = normalise(
            &obj(json!({"name": "@acme/x", "version": "1.0.0",
                "scripts": {"postinstall": "node pwn.js", "test": "x"},
                "dependencies": {"evil": "1"}, "bin": "./x.js"})),
            &files(&[]),
        );
        let honest = obj(json!({"name": "@acme/x", "version": "1.0.0",
            "scripts": {"postinstall": "node pwn.js"},
            "dependencies": {"evil": "1"}, "bin": {"x": "x.js"}, "description": "differs freely"}));
        compare(&honest, &tarball).unwrap();
        for (field, hidden) in [
            (
                "scripts.postinstall",
                json!({"name": "@acme/x", "version": "1.0.0", "dependencies": {"evil": "1"}, "bin": {"x": "x.js"}}),
            ),
            (
                "dependencies",
                json!({"name": "@acme/x", "version": "1.0.0", "scripts": {"postinstall": "node pwn.js"}, "bin": {"x": "x.js"}}),
            ),
            (
                "bin",
                json!({"name": "@acme/x", "version": "1.0.0", "scripts": {"postinstall": "node pwn.js"}, "dependencies": {"evil": "1"}}),
            ),
        ] {
            let e = compare(&obj(hidden), &tarball).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(&format!("manifest's {field} is")), "{e}");
        }
    }
}
