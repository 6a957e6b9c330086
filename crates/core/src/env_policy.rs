//! Builds a child's environment from `env` and an optional `envPolicy` (spec §4.7).

use std::collections::HashMap;

use exec_server_protocol::process::{EnvInherit, ExecEnvPolicy};

/// Variables kept by `inherit: core` on Unix.
const CORE_VARS: &[&str] = &[
    "PATH", "SHELL", "TMPDIR", "TEMP", "TMP", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME",
    "USER",
];

/// Name patterns dropped unless `ignoreDefaultExcludes`.
const DEFAULT_EXCLUDES: &[&str] = &["*KEY*", "*SECRET*", "*TOKEN*"];

/// The child's environment: exactly `env` without a policy; otherwise the policy applied to
/// `server_env` (the executor's own environment), then `env` on top.
pub fn build(
    env: &HashMap<String, String>,
    policy: Option<&ExecEnvPolicy>,
    server_env: impl IntoIterator<Item = (String, String)>,
) -> HashMap<String, String> {
    let Some(policy) = policy else {
        return env.clone();
    };
    let mut out: HashMap<String, String> = match policy.inherit {
        EnvInherit::None => HashMap::new(),
        EnvInherit::All => server_env.into_iter().collect(),
        EnvInherit::Core => server_env
            .into_iter()
            .filter(|(k, _)| CORE_VARS.contains(&k.as_str()))
            .collect(),
    };
    if !policy.ignore_default_excludes {
        out.retain(|k, _| !DEFAULT_EXCLUDES.iter().any(|p| glob_match(p, k)));
    }
    out.retain(|k, _| !policy.exclude.iter().any(|p| glob_match(p, k)));
    for (k, v) in &policy.set {
        out.insert(k.clone(), v.clone());
    }
    if !policy.include_only.is_empty() {
        out.retain(|k, _| policy.include_only.iter().any(|p| glob_match(p, k)));
    }
    for (k, v) in env {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Case-insensitive glob match supporting `*` and `?`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Vec<(String, String)> {
        [
            ("PATH", "/bin"),
            ("MY_API_KEY", "k"),
            ("MARKER", "m"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn policy(inherit: EnvInherit) -> ExecEnvPolicy {
        ExecEnvPolicy {
            inherit,
            ignore_default_excludes: false,
            exclude: vec![],
            set: HashMap::new(),
            include_only: vec![],
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*KEY*", "my_api_key"));
        assert!(glob_match("A?C", "abc"));
        assert!(!glob_match("A?C", "abbc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("ES_*_M*", "ES_CONF_MARKER"));
    }

    #[test]
    fn without_policy_env_is_exact() {
        let env = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(build(&env, None, server()), env);
    }

    #[test]
    fn policy_steps_apply_in_order() {
        let mut p = policy(EnvInherit::All);
        let env = HashMap::from([("MY_TOKEN".to_string(), "env-wins".to_string())]);
        let out = build(&env, Some(&p), server());
        assert!(!out.contains_key("MY_API_KEY"));
        assert_eq!(out["MY_TOKEN"], "env-wins");
        p.ignore_default_excludes = true;
        p.exclude = vec!["mark*".into()];
        let out = build(&HashMap::new(), Some(&p), server());
        assert!(out.contains_key("MY_API_KEY") && !out.contains_key("MARKER"));
        let mut p = policy(EnvInherit::Core);
        p.include_only = vec!["PATH".into()];
        let out = build(&HashMap::new(), Some(&p), server());
        assert_eq!(out.keys().collect::<Vec<_>>(), vec!["PATH"]);
    }
}
