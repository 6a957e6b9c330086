//! The decision for one stopped exec: every program it runs (under its own name, its target's,
//! a script's interpreter, a loader's program) is checked against the rules and the strictest
//! decision wins; a program no rule can name (an in-memory or deleted file) is at least
//! `prompt` when any rule is loaded.

use exec_server_execguard::Exec;
use exec_server_execpolicy::{Decision, Rules, Verdict};

/// What to do with an exec, and why (for the denial line and the approval message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The decision.
    pub decision: Decision,
    /// The rule that decided it, or the built-in reason.
    pub reason: String,
}

/// Judges `exec`; `None` when no rule applies (it runs).
pub fn judge(rules: &Rules, exec: &Exec) -> Option<Judgement> {
    let mut best: Option<Verdict> = None;
    for s in &exec.subjects {
        if let Some(v) = rules.check(&s.program, &s.argv) {
            if best.as_ref().is_none_or(|b| v.decision > b.decision) {
                best = Some(v);
            }
        }
    }
    let judged = best.map(|v| Judgement {
        decision: v.decision,
        reason: v.to_string(),
    });
    if let (Some(anonymous), false) = (&exec.anonymous, rules.is_empty()) {
        let floor = Judgement {
            decision: Decision::Prompt,
            reason: format!(
                "it runs {}, an in-memory or deleted file, which no rule can name",
                anonymous.display()
            ),
        };
        return Some(match judged {
            Some(j) if j.decision >= Decision::Prompt => j,
            _ => floor,
        });
    }
    judged
}

/// The command line for people: the program's path, then the arguments after `argv[0]`,
/// quoted for a POSIX shell where needed.
pub fn command_line(exec: &Exec) -> String {
    let mut out = quote(&exec.program.to_string_lossy());
    for a in exec.argv.iter().skip(1) {
        out.push(' ');
        out.push_str(&quote(a));
    }
    out
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The line written to the tool's output for a refused exec.
pub fn denial_line(exec: &Exec, why: &str) -> String {
    format!("Execution denied: {}: {why}\n", command_line(exec))
}

/// The message of the approval request.
pub fn approval_message(exec: &Exec, judgement: &Judgement) -> String {
    format!(
        "Allow running `{}` in {}?\n(program: {}; {})",
        command_line(exec),
        exec.cwd.display(),
        exec.program.display(),
        judgement.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_execguard::Subject;
    use std::path::PathBuf;

    fn exec(program: &str, target: &str, argv: &[&str], anonymous: bool) -> Exec {
        let anonymous = anonymous.then(|| PathBuf::from(target));
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut subjects = vec![Subject {
            program: program.into(),
            argv: argv.clone(),
        }];
        if target != program {
            subjects.push(Subject {
                program: target.into(),
                argv: argv.clone(),
            });
        }
        Exec {
            program: program.into(),
            target: target.into(),
            argv,
            cwd: PathBuf::from("/w"),
            subjects,
            anonymous,
        }
    }

    fn rules(src: &str) -> Rules {
        Rules::parse(src, "t.rules").unwrap()
    }

    #[test]
    fn strictest_of_the_names_wins() {
        let r = rules(
            r#"prefix_rule(pattern=["ls"], decision="allow")
prefix_rule(pattern=["busybox"], decision="forbidden")"#,
        );
        let j = judge(&r, &exec("/bin/ls", "/bin/busybox", &["ls", "-l"], false)).unwrap();
        assert_eq!(j.decision, Decision::Forbidden);
        assert!(j.reason.contains("busybox"), "{}", j.reason);
        assert_eq!(
            judge(&r, &exec("/bin/ls", "/bin/ls", &["ls"], false))
                .unwrap()
                .decision,
            Decision::Allow
        );
        assert!(judge(&r, &exec("/bin/cat", "/bin/cat", &["cat"], false)).is_none());
    }

    #[test]
    fn an_anonymous_program_is_asked_about_when_rules_exist() {
        let r = rules(r#"prefix_rule(pattern=["rm"], decision="forbidden")"#);
        let e = exec("/memfd:x (deleted)", "/memfd:x (deleted)", &["x"], true);
        assert_eq!(judge(&r, &e).unwrap().decision, Decision::Prompt);
        assert!(judge(&Rules::empty(), &e).is_none());
    }

    #[test]
    fn messages_name_program_arguments_and_workdir() {
        let e = exec(
            "/usr/bin/touch",
            "/usr/bin/touch",
            &["touch", "a b", "c"],
            false,
        );
        let j = Judgement {
            decision: Decision::Prompt,
            reason: "r".into(),
        };
        let m = approval_message(&e, &j);
        assert!(
            m.contains("/usr/bin/touch 'a b' c") && m.contains("/w"),
            "{m}"
        );
        assert_eq!(
            denial_line(&e, "no"),
            "Execution denied: /usr/bin/touch 'a b' c: no\n"
        );
    }
}
