//! Kafka's config providers, as MM2 resolves them: `config.providers = file, env, dir` with
//! `config.providers.<name>.class` naming one of Kafka's three built-in providers, and
//! `${name:path:key}` / `${name:key}` placeholders in any value.
//!
//! - `FileConfigProvider`: `${file:/etc/kafka/secrets.properties:password}`, a key of a
//!   properties file.
//! - `DirectoryConfigProvider`: `${dir:/run/secrets:password}`, the whole content of a file in a
//!   directory (as Kubernetes mounts secrets).
//! - `EnvVarConfigProvider`: `${env:KAFKA_PASSWORD}`, an environment variable.
//!
//! Where Kafka leaves a placeholder it cannot resolve in place (a missing key, variable or
//! provider), so that the placeholder text itself is sent as a password, Ferry refuses the
//! file naming the line, key, provider and what is missing. Custom provider classes (Java
//! code) cannot run here and are refused. Resolved values are never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

const FILE_CLASS: &str = "org.apache.kafka.common.config.provider.FileConfigProvider";
const DIRECTORY_CLASS: &str = "org.apache.kafka.common.config.provider.DirectoryConfigProvider";
const ENV_CLASS: &str = "org.apache.kafka.common.config.provider.EnvVarConfigProvider";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Directory,
    Env,
}

#[derive(Debug)]
struct Provider {
    kind: Kind,
    /// `param.allowed.paths` (file, dir): only paths under these may be read.
    allowed_paths: Option<Vec<PathBuf>>,
    /// `param.allowlist.pattern` (env): only variables matching it may be read.
    allowlist: Option<Regex>,
}

/// The providers a file declares. Built from its `config.providers*` entries.
#[derive(Debug, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
}

/// Whether `key` configures providers (and is consumed here, not a client property).
pub fn is_provider_key(key: &str) -> bool {
    key == "config.providers" || key.starts_with("config.providers.")
}

impl Providers {
    /// Reads the declarations. `get(key)` returns the value of a top-level key; problems are
    /// returned as (key, reason).
    pub fn declare(get: impl Fn(&str) -> Option<String>) -> (Providers, Vec<(String, String)>) {
        let mut providers = Providers::default();
        let mut problems = Vec::new();
        let Some(names) = get("config.providers") else { return (providers, problems) };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let class_key = format!("config.providers.{name}.class");
            let kind = match get(&class_key).as_deref().map(str::trim) {
                Some(FILE_CLASS) => Kind::File,
                Some(DIRECTORY_CLASS) => Kind::Directory,
                Some(ENV_CLASS) => Kind::Env,
                Some(other) => {
                    problems.push((class_key, format!(
                        "config provider class '{other}' is Java code Ferry cannot run (supported: {FILE_CLASS}, {DIRECTORY_CLASS}, {ENV_CLASS})")));
                    continue;
                }
                None => {
                    problems.push(("config.providers".into(), format!("provider '{name}' has no `{class_key}`")));
                    continue;
                }
            };
            let param = |p: &str| get(&format!("config.providers.{name}.param.{p}"));
            let allowed_paths = param("allowed.paths").map(|v| v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect());
            let allowlist = match param("allowlist.pattern") {
                None => None,
                Some(pattern) => match Regex::new(&format!("^(?:{pattern})$")) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        problems.push((format!("config.providers.{name}.param.allowlist.pattern"), format!("invalid regex '{pattern}': {e}")));
                        continue;
                    }
                },
            };
            providers.by_name.insert(name.to_string(), Provider { kind, allowed_paths, allowlist });
        }
        (providers, problems)
    }

    /// `value` with every `${provider:path:key}` replaced; the error says which placeholder
    /// failed and why, without any resolved secret.
    pub fn resolve(&self, value: &str) -> Result<String, String> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else { break };
            let inner = &rest[start + 2..start + len];
            // Kafka's pattern needs a ':' (provider:key); anything else is left as written.
            let Some((name, spec)) = inner.split_once(':') else {
                out.push_str(&rest[..start + len + 1]);
                rest = &rest[start + len + 1..];
                continue;
            };
            let (path, key) = spec.split_once(':').map_or(("", spec), |(p, k)| (p, k));
            out.push_str(&rest[..start]);
            out.push_str(&self.lookup(name, path, key).map_err(|e| format!("cannot resolve ${{{inner}}}: {e}"))?);
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str, path: &str, key: &str) -> Result<String, String> {
        let Some(provider) = self.by_name.get(name) else {
            let declared: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            return Err(format!(
                "no config provider '{name}' is declared (config.providers = {}); MM2 would send the placeholder itself as the value",
                if declared.is_empty() { "<unset>".to_string() } else { declared.join(", ") }));
        };
        match provider.kind {
            Kind::Env => {
                if !path.is_empty() {
                    return Err("the env provider takes no path: write ${env:VARIABLE}".into());
                }
                if provider.allowlist.as_ref().is_some_and(|r| !r.is_match(key)) {
                    return Err(format!("environment variable '{key}' is not matched by config.providers.{name}.param.allowlist.pattern"));
                }
                std::env::var(key).map_err(|_| format!("environment variable '{key}' is not set"))
            }
            Kind::File => {
                let file = provider.allowed(name, path)?;
                let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let entries = super::properties::parse(&text).map_err(|(line, e)| format!("{}:{line}: {e}", file.display()))?;
                // The last occurrence wins, as in Java.
                entries.into_iter().rev().find(|e| e.key == key).map(|e| e.value).ok_or_else(|| format!("{} has no key '{key}'", file.display()))
            }
            Kind::Directory => {
                let dir = provider.allowed(name, path)?;
                if key.contains('/') || key == ".." {
                    return Err(format!("'{key}' is not a file name in {}", dir.display()));
                }
                let file = dir.join(key);
                std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))
            }
        }
    }
}

impl Provider {
    fn allowed(&self, name: &str, path: &str) -> Result<PathBuf, String> {
        if path.is_empty() {
            return Err(format!("provider '{name}' needs a path: ${{{name}:/path:key}}"));
        }
        let path = Path::new(path);
        if let Some(allowed) = &self.allowed_paths {
            // Compared after resolving `..` and links, as Kafka's allowed.paths does.
            let real = path.canonicalize().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if !allowed.iter().any(|a| a.canonicalize().is_ok_and(|a| real.starts_with(a))) {
                return Err(format!("{} is outside config.providers.{name}.param.allowed.paths", path.display()));
            }
        }
        Ok(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(pairs: &[(&str, &str)]) -> (Providers, Vec<(String, String)>) {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Providers::declare(|k| map.get(k).cloned())
    }

    #[test]
    fn file_dir_and_env_placeholders_resolve() {
        let dir = std::env::temp_dir().join(format!("ferry-providers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secrets.properties"), "password = s3cr=t\\\"x\nother = 1\n").unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        std::env::set_var("FERRY_TEST_PROVIDER_VAR", "from-env");
        let (p, problems) = declare(&[
            ("config.providers", "file, dir ,env"),
            ("config.providers.file.class", FILE_CLASS),
            ("config.providers.dir.class", DIRECTORY_CLASS),
            ("config.providers.env.class", ENV_CLASS),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let d = dir.display();
        assert_eq!(p.resolve(&format!("${{file:{d}/secrets.properties:password}}")).unwrap(), "s3cr=t\"x");
        assert_eq!(p.resolve(&format!("a ${{dir:{d}:token}} b")).unwrap(), "a tok\n b");
        assert_eq!(p.resolve("u=${env:FERRY_TEST_PROVIDER_VAR};").unwrap(), "u=from-env;");
        assert_eq!(p.resolve("no placeholder ${here} or $ {x:y}").unwrap(), "no placeholder ${here} or $ {x:y}");

        let err = p.resolve(&format!("${{file:{d}/secrets.properties:missing}}")).unwrap_err();
        assert!(err.contains("has no key 'missing'"), "{err}");
        let err = p.resolve("${env:FERRY_TEST_PROVIDER_UNSET}").unwrap_err();
        assert!(err.contains("'FERRY_TEST_PROVIDER_UNSET' is not set"), "{err}");
        let err = p.resolve("${vault:secret/kafka:pw}").unwrap_err();
        assert!(err.contains("no config provider 'vault' is declared (config.providers = dir, env, file)"), "{err}");
        let err = p.resolve(&format!("${{dir:{d}:../x}}")).unwrap_err();
        assert!(err.contains("not a file name"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allow_lists_and_custom_classes() {
        let (p, problems) = declare(&[
            ("config.providers", "file,env,vault,bare"),
            ("config.providers.file.class", FILE_CLASS),
            ("config.providers.file.param.allowed.paths", "/nonexistent-ferry-dir"),
            ("config.providers.env.class", ENV_CLASS),
            ("config.providers.env.param.allowlist.pattern", "KAFKA_.*"),
            ("config.providers.vault.class", "com.example.VaultConfigProvider"),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].0 == "config.providers.vault.class" && problems[0].1.contains("Java code Ferry cannot run"), "{problems:?}");
        assert!(problems[1].1.contains("provider 'bare' has no `config.providers.bare.class`"), "{problems:?}");
        std::env::set_var("FERRY_TEST_NOT_ALLOWED", "x");
        let err = p.resolve("${env:FERRY_TEST_NOT_ALLOWED}").unwrap_err();
        assert!(err.contains("not matched by config.providers.env.param.allowlist.pattern"), "{err}");
        let err = p.resolve("${file:/etc/hostname:x}").unwrap_err();
        assert!(err.contains("outside config.providers.file.param.allowed.paths"), "{err}");
    }
}
