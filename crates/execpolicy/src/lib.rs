//! Rules files in the Codex execpolicy syntax: which programs a shell may execute.
//!
//! An MCP shell tool that checks every program a shell executes asks [`Rules::check`] with
//! the program's resolved path and its argv, and gets back the [`Decision`] of the rule that
//! decided (with its pattern, `file:line` and justification, for an "Execution denied:"
//! message), or `None` when no rule applies.
//!
//! # Format
//!
//! A rules file is a sequence of `prefix_rule(...)` calls in Starlark syntax: `#` comments,
//! strings in single or double quotes (triple quotes and `r"..."` raw strings too, with
//! Starlark's escapes), keyword arguments in any order, trailing commas, calls spanning
//! lines, statements separated by newlines or `;`.
//!
//! ```starlark
//! # Reading the tree is fine.
//! prefix_rule(pattern = ["ls"])
//! prefix_rule(
//!     pattern = ["git", ["status", "diff", "log"]],   # a list = alternatives
//!     decision = "allow",
//! )
//! prefix_rule(
//!     pattern = ["git", "push"],
//!     decision = "forbidden",
//!     justification = "pushing is done by CI",
//!     match = [["git", "push", "origin", "main"], "/usr/bin/git push"],
//!     not_match = ["git pull"],
//! )
//! ```
//!
//! - `pattern` (required): a non-empty list; each element is a string or a non-empty list of
//!   alternative strings. It matches when it is a prefix of the command, word by word.
//! - `decision`: `"allow"` (the default), `"prompt"` or `"forbidden"`.
//! - `justification`: a non-empty string shown with the decision.
//! - `match` / `not_match`: example commands, each a list of words or a string split like
//!   a shell command line (quotes and backslashes, no expansion). They are checked when the
//!   file is loaded: every `match` example must match the rule and no `not_match` example
//!   may, or loading fails naming the rule and the example.
//!
//! Anything else (another function, an unknown or repeated keyword argument, a value of the
//! wrong type, variables or expressions) is an error. Errors carry `file:line:column`.
//!
//! # Matching
//!
//! The first pattern element is compared with the **file name of the program actually
//! executed** (`/usr/bin/git` matches `"git"`); `argv[0]` is ignored, since a process can
//! set it to anything. An alternative containing `/` is compared with the whole program path
//! instead. The other elements are compared with `argv[1..]`. When several rules match, the
//! strictest decision wins (`forbidden` > `prompt` > `allow`), and among rules with that
//! decision the first loaded one is reported.
//!
//! # Bounds
//!
//! A rules file larger than [`MAX_RULES_FILE_BYTES`] (1 MiB) is refused with
//! [`RulesError::TooLarge`]. Lists nest at most 8 deep (a valid rule needs 2). Checking a
//! command looks at every rule, so its cost grows with the number of rules.
//!
//! ```
//! use std::path::Path;
//! use exec_server_execpolicy::{Decision, Rules};
//!
//! let rules = Rules::parse(
//!     r#"prefix_rule(pattern = ["git", "push"], decision = "forbidden", justification = "use the CI")"#,
//!     "team.rules",
//! )?;
//! let argv = ["git", "push", "origin"].map(String::from);
//! let verdict = rules.check(Path::new("/usr/bin/git"), &argv).expect("a rule applies");
//! assert_eq!(verdict.decision, Decision::Forbidden);
//! assert_eq!(verdict.rule, r#"["git", "push"]"#);
//! assert_eq!(verdict.origin, "team.rules:1");
//! assert_eq!(verdict.to_string(), r#"forbidden by rule ["git", "push"] (team.rules:1): use the CI"#);
//! assert!(rules.check(Path::new("/usr/bin/git"), &["git".into(), "pull".into()]).is_none());
//! # Ok::<(), exec_server_execpolicy::RulesError>(())
//! ```
#![warn(missing_docs)]

mod declare;
mod error;
mod lexer;
mod parser;
mod rule;
mod shell;

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

pub use error::RulesError;
use rule::Rule;

/// The largest rules file [`Rules::load`] and [`Rules::parse`] accept, in bytes (1 MiB).
pub const MAX_RULES_FILE_BYTES: u64 = 1 << 20;

/// What a rule says about a command. Ordered by strictness: `Allow < Prompt < Forbidden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    /// Run it.
    Allow,
    /// Ask the user first.
    Prompt,
    /// Do not run it.
    Forbidden,
}

impl Decision {
    /// The name used in rules files: `allow`, `prompt` or `forbidden`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Prompt => "prompt",
            Decision::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`Rules::check`]: the decision and the rule that made it.
///
/// Its `Display` is `<decision> by rule <rule> (<origin>)`, followed by `: <justification>`
/// when the rule has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The strictest decision among the matching rules.
    pub decision: Decision,
    /// The deciding rule's pattern as written in a rules file, e.g. `["git", "push"]`.
    pub rule: String,
    /// Where the deciding rule is: `file:line` of its `prefix_rule`.
    pub origin: String,
    /// The deciding rule's justification, if it has one.
    pub justification: Option<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by rule {} ({})",
            self.decision, self.rule, self.origin
        )?;
        if let Some(justification) = &self.justification {
            write!(f, ": {justification}")?;
        }
        Ok(())
    }
}

/// A set of prefix rules from zero or more files, in load order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// No rules: [`check`](Rules::check) always returns `None`.
    pub fn empty() -> Rules {
        Rules::default()
    }

    /// Loads the files in order (as the CLI's repeated `--rules` flags give them). An empty
    /// slice gives [`Rules::empty`]. Each file is named in errors as its path is displayed.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Rules, RulesError> {
        let mut rules = Rules::empty();
        for path in paths {
            let path = path.as_ref();
            let name = path.display().to_string();
            let text = read_bounded(path, &name)?;
            rules.extend(Rules::parse(&text, &name)?);
        }
        Ok(rules)
    }

    /// Parses one file's text; `file` names it in errors and in [`Verdict::origin`]. Checks
    /// every rule's `match` / `not_match` examples.
    pub fn parse(source: &str, file: &str) -> Result<Rules, RulesError> {
        if source.len() as u64 > MAX_RULES_FILE_BYTES {
            return Err(RulesError::TooLarge {
                file: file.to_string(),
                limit: MAX_RULES_FILE_BYTES,
            });
        }
        // A byte order mark is invisible in editors, so columns are counted without it.
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let calls = parser::parse(source).map_err(|e| RulesError::Syntax {
            file: file.to_string(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        let file: Arc<str> = Arc::from(file);
        let declared = calls
            .into_iter()
            .map(|call| declare::declare(call, &file))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = Vec::with_capacity(declared.len());
        for rule in declared {
            rule.check_examples()?;
            rules.push(rule.rule);
        }
        Ok(Rules { rules })
    }

    /// Appends `other`'s rules after this set's.
    pub fn extend(&mut self, other: Rules) {
        self.rules.extend(other.rules);
    }

    /// The number of `prefix_rule` calls loaded.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The verdict on executing `program` (the resolved path that is executed) with `argv`,
    /// or `None` when no rule matches. `argv[0]` is ignored: the program's file name stands
    /// in for it.
    pub fn check(&self, program: &Path, argv: &[String]) -> Option<Verdict> {
        let mut best: Option<&Rule> = None;
        for rule in &self.rules {
            if best.is_some_and(|b| b.decision >= rule.decision) || !rule.matches(program, argv) {
                continue;
            }
            best = Some(rule);
            if rule.decision == Decision::Forbidden {
                break;
            }
        }
        best.map(|rule| Verdict {
            decision: rule.decision,
            rule: rule.render(),
            origin: rule.origin(),
            justification: rule.justification.clone(),
        })
    }
}

/// Reads a rules file, refusing one over [`MAX_RULES_FILE_BYTES`] without reading it all.
fn read_bounded(path: &Path, name: &str) -> Result<String, RulesError> {
    let io = |source| RulesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_RULES_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_RULES_FILE_BYTES {
        return Err(RulesError::TooLarge {
            file: name.to_string(),
            limit: MAX_RULES_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // The valid prefix is UTF-8, so this is lossless.
        let valid = String::from_utf8_lossy(valid);
        let line = valid.matches('\n').count() + 1;
        let column = valid
            .rsplit('\n')
            .next()
            .map_or(0, |last| last.chars().count())
            + 1;
        RulesError::Syntax {
            file: name.to_string(),
            line,
            column,
            message: "invalid UTF-8".to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn git() -> &'static Path {
        Path::new("/usr/bin/git")
    }

    #[test]
    fn decisions_order_by_strictness_and_display_their_names() {
        assert!(Decision::Allow < Decision::Prompt);
        assert!(Decision::Prompt < Decision::Forbidden);
        assert_eq!(
            [Decision::Allow, Decision::Prompt, Decision::Forbidden].map(|d| d.to_string()),
            ["allow", "prompt", "forbidden"]
        );
    }

    #[test]
    fn no_rules_means_no_verdict() {
        let rules = Rules::empty();
        assert!(rules.is_empty());
        assert_eq!(rules.len(), 0);
        assert_eq!(rules.check(git(), &argv(&["git", "push"])), None);
        let rules = Rules::load(&[] as &[&Path]).unwrap();
        assert!(rules.is_empty());
        let rules = Rules::parse("# only a comment\n", "x.rules").unwrap();
        assert!(rules.is_empty());
    }

    #[test]
    fn strictest_decision_wins_whatever_the_order() {
        let rules = Rules::parse(
            r#"
prefix_rule(pattern = ["git"], decision = "allow")
prefix_rule(pattern = ["git", "push"], decision = "forbidden", justification = "use CI")
prefix_rule(pattern = ["git", ["push", "fetch"]], decision = "prompt")
prefix_rule(pattern = ["git", "push", "--force"], decision = "forbidden")
"#,
            "r.rules",
        )
        .unwrap();
        assert_eq!(rules.len(), 4);
        let verdict = rules
            .check(git(), &argv(&["git", "push", "--force"]))
            .unwrap();
        assert_eq!(
            verdict,
            Verdict {
                decision: Decision::Forbidden,
                rule: r#"["git", "push"]"#.into(),
                origin: "r.rules:3".into(),
                justification: Some("use CI".into()),
            }
        );
        let verdict = rules.check(git(), &argv(&["git", "fetch"])).unwrap();
        assert_eq!(verdict.decision, Decision::Prompt);
        assert_eq!(verdict.rule, r#"["git", ["push", "fetch"]]"#);
        assert_eq!(verdict.origin, "r.rules:4");
        assert_eq!(verdict.justification, None);
        assert_eq!(
            verdict.to_string(),
            r#"prompt by rule ["git", ["push", "fetch"]] (r.rules:4)"#
        );
        let verdict = rules.check(git(), &argv(&["git", "status"])).unwrap();
        assert_eq!(
            (verdict.decision, verdict.origin.as_str()),
            (Decision::Allow, "r.rules:2")
        );
        assert_eq!(rules.check(Path::new("/bin/ls"), &argv(&["ls"])), None);
    }

    #[test]
    fn several_files_combine_in_order() {
        let mut rules = Rules::parse(
            r#"prefix_rule(pattern=["rm"], decision="prompt")"#,
            "a.rules",
        )
        .unwrap();
        rules.extend(
            Rules::parse(
                r#"prefix_rule(pattern=["rm"], decision="prompt")"#,
                "b.rules",
            )
            .unwrap(),
        );
        rules.extend(
            Rules::parse(
                r#"prefix_rule(pattern=["rm", "-rf"], decision="forbidden")"#,
                "c.rules",
            )
            .unwrap(),
        );
        assert_eq!(rules.len(), 3);
        let rm = Path::new("/bin/rm");
        assert_eq!(
            rules.check(rm, &argv(&["rm", "x"])).unwrap().origin,
            "a.rules:1"
        );
        assert_eq!(
            rules.check(rm, &argv(&["rm", "-rf", "/"])).unwrap().origin,
            "c.rules:1"
        );
    }

    #[test]
    fn load_reads_files_and_names_them_in_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let a = dir.join("a.rules");
        let b = dir.join("b.rules");
        std::fs::write(&a, "prefix_rule(pattern=['ls'])\n").unwrap();
        std::fs::write(
            &b,
            "prefix_rule(\n  pattern=['cat'],\n  decision='prompt',\n)\n",
        )
        .unwrap();
        let rules = Rules::load(&[&a, &b]).unwrap();
        assert_eq!(rules.len(), 2);
        let verdict = rules.check(Path::new("/bin/cat"), &argv(&["cat"])).unwrap();
        assert_eq!(verdict.origin, format!("{}:1", b.display()));

        let missing = dir.join("missing.rules");
        let err = Rules::load(&[&a, &missing]).unwrap_err();
        assert!(matches!(&err, RulesError::Io { path, .. } if *path == missing));
        assert!(err
            .to_string()
            .starts_with(&format!("cannot read rules file {}: ", missing.display())));

        let bad = dir.join("bad.rules");
        std::fs::write(&bad, "prefix_rule(pattern=['a'],\n  decision='allow' x)\n").unwrap();
        let err = Rules::load(&[&bad]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:2:20: expected ',' or ')'", bad.display())
        );

        let not_utf8 = dir.join("latin1.rules");
        std::fs::write(&not_utf8, b"# ok\nprefix_rule(pattern=['caf\xe9'])\n").unwrap();
        let err = Rules::load(&[&not_utf8]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:2:26: invalid UTF-8", not_utf8.display())
        );

        let big = dir.join("big.rules");
        let mut text = "# padding\n".repeat((MAX_RULES_FILE_BYTES as usize) / 10);
        text.push_str("prefix_rule(pattern=['ls'])\n");
        std::fs::write(&big, &text).unwrap();
        let err = Rules::load(&[&big]).unwrap_err();
        assert!(matches!(err, RulesError::TooLarge { limit, .. } if limit == MAX_RULES_FILE_BYTES));
        assert_eq!(
            err.to_string(),
            format!(
                "{}: rules file is larger than the limit of 1048576 bytes",
                big.display()
            )
        );
        assert!(matches!(
            Rules::parse(&text, "big"),
            Err(RulesError::TooLarge { .. })
        ));
        // Exactly at the limit is fine.
        let text = " ".repeat(MAX_RULES_FILE_BYTES as usize);
        assert!(Rules::parse(&text, "spaces").is_ok_and(|r| r.is_empty()));
    }

    #[test]
    fn syntax_errors_carry_file_line_and_column() {
        let src = "# rules\nprefix_rule(\n    pattern = [\"git\" \"push\"],\n)\n";
        let err = Rules::parse(src, "rules.rules").unwrap_err();
        assert_eq!(err.to_string(), "rules.rules:3:22: expected ',' or ']'");
        match err {
            RulesError::Syntax {
                file,
                line,
                column,
                message,
            } => {
                assert_eq!((file.as_str(), line, column), ("rules.rules", 3, 22));
                assert_eq!(message, "expected ',' or ']'");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        // A syntax error later in the file is reported before an invalid rule earlier.
        let src = "prefix_rule(pattern='x')\nprefix_rule(pattern=['a'\n";
        assert_eq!(
            Rules::parse(src, "f").unwrap_err().to_string(),
            "f:3:1: expected ',' or ']'"
        );
    }

    #[test]
    fn invalid_rules_and_failing_examples_are_load_errors() {
        let err = Rules::parse("prefix_rule(pattern=['a'], decision='deny')", "f").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"f:1:37: `decision` must be "allow", "prompt" or "forbidden", found "deny""#
        );
        let src = "prefix_rule(pattern=['ls'])\n\nprefix_rule(\n  pattern=['git', 'push'],\n  match=['git push', 'git pull'],\n)\n";
        let err = Rules::parse(src, "team.rules").unwrap_err();
        assert!(matches!(
            err,
            RulesError::Example {
                line: 3,
                expected_match: true,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            r#"team.rules:3: rule ["git", "push"]: match example ["git", "pull"] does not match it"#
        );
    }

    #[test]
    fn quoting_comments_and_line_endings() {
        let src = concat!(
            "\u{feff}# team rules\r\n",
            "prefix_rule(  # a comment inside the call\r\n",
            "    decision = 'prompt',\r\n",
            r#"    pattern = ['echo', "it's", 'say "hi"', r'C:\x', '\x41\t'],"#,
            "\r\n",
            r#"    justification = """quotes: ' and \" inside""","#,
            "\r\n)\r\n",
        );
        let rules = Rules::parse(src, "q.rules").unwrap();
        let words = argv(&["echo", "it's", "say \"hi\"", r"C:\x", "A\t", "more"]);
        let verdict = rules.check(Path::new("/bin/echo"), &words).unwrap();
        assert_eq!(verdict.origin, "q.rules:2");
        assert_eq!(verdict.decision, Decision::Prompt);
        assert_eq!(
            verdict.justification.as_deref(),
            Some("quotes: ' and \" inside")
        );
        assert_eq!(
            verdict.rule,
            r#"["echo", "it's", "say \"hi\"", "C:\\x", "A\t"]"#
        );
        let err = Rules::parse("\u{feff}prefix_rule(pattern=['a'] x)", "bom").unwrap_err();
        assert_eq!(err.to_string(), "bom:1:27: expected ',' or ')'");
    }

    #[test]
    fn upstream_example_file_loads() {
        let src = r#"
# Example policy: every shape of prefix_rule.
prefix_rule(
    pattern = ["git", "reset", "--hard"],
    decision = "forbidden",
    justification = "destructive operation",
    match = [
        ["git", "reset", "--hard"],
    ],
    not_match = [
        ["git", "reset", "--keep"],
        "git reset --merge",
    ],
)

prefix_rule(
    pattern = ["cp"],
    decision = "prompt",
    match = [
        ["cp", "foo", "bar"],
        "cp -r src dest",
    ],
)
prefix_rule(pattern = ["cmd", ["alt1", "alt2"]], match = [["cmd", "alt1"], "cmd alt2"], not_match = [["cmd", "oops"], "cmd alt3"])
"#;
        let rules = Rules::parse(src, "example.rules").unwrap();
        assert_eq!(rules.len(), 3);
        let verdict = rules
            .check(Path::new("/usr/bin/cp"), &argv(&["cp", "-r", "a", "b"]))
            .unwrap();
        assert_eq!(verdict.decision, Decision::Prompt);
        assert_eq!(verdict.origin, "example.rules:16");
    }
}
