//! Building a rule from a parsed `prefix_rule(...)` call: the function's name, its keyword
//! arguments and their types, and the `match` / `not_match` examples checked against it.

use std::sync::Arc;

use crate::parser::{Call, Value, ValueKind};
use crate::rule::{render_str, render_words, Rule};
use crate::{shell, Decision, RulesError};

/// A rule with the examples it was declared with, before they are checked.
#[derive(Debug)]
pub(crate) struct Declared {
    pub(crate) rule: Rule,
    pub(crate) matches: Vec<Vec<String>>,
    pub(crate) not_matches: Vec<Vec<String>>,
}

/// The keyword arguments `prefix_rule` takes.
const ARGUMENTS: &str = "pattern, decision, justification, match, not_match";

fn invalid(file: &Arc<str>, line: usize, column: usize, message: String) -> RulesError {
    RulesError::Invalid {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

fn describe(value: &ValueKind) -> String {
    match value {
        ValueKind::Str(_) => "a string".to_string(),
        ValueKind::List(_) => "a list".to_string(),
        ValueKind::Other(text) => format!("`{text}`"),
    }
}

/// Builds the rule a call declares, checking its name, arguments and their types.
pub(crate) fn declare(call: Call, file: &Arc<str>) -> Result<Declared, RulesError> {
    if call.name != "prefix_rule" {
        return Err(invalid(
            file,
            call.line,
            call.column,
            format!(
                "unknown function `{}`: a rules file holds only prefix_rule(...) calls",
                call.name
            ),
        ));
    }
    let mut pattern = None;
    let mut decision = None;
    let mut justification = None;
    let mut matches = None;
    let mut not_matches = None;
    for arg in call.args {
        let duplicate = match arg.name.as_str() {
            "pattern" => pattern.replace(parse_pattern(&arg.value, file)?).is_some(),
            "decision" => decision
                .replace(parse_decision(&arg.value, file)?)
                .is_some(),
            "justification" => justification
                .replace(parse_justification(&arg.value, file)?)
                .is_some(),
            "match" => matches
                .replace(parse_examples(&arg.value, "match", file)?)
                .is_some(),
            "not_match" => not_matches
                .replace(parse_examples(&arg.value, "not_match", file)?)
                .is_some(),
            other => {
                return Err(invalid(
                    file,
                    arg.line,
                    arg.column,
                    format!("unknown keyword argument `{other}`: prefix_rule takes {ARGUMENTS}"),
                ))
            }
        };
        if duplicate {
            return Err(invalid(
                file,
                arg.line,
                arg.column,
                format!("keyword argument `{}` given twice", arg.name),
            ));
        }
    }
    let Some(pattern) = pattern else {
        return Err(invalid(
            file,
            call.line,
            call.column,
            "prefix_rule needs a `pattern` argument".to_string(),
        ));
    };
    Ok(Declared {
        rule: Rule {
            pattern,
            decision: decision.unwrap_or(Decision::Allow),
            justification,
            file: file.clone(),
            line: call.line,
        },
        matches: matches.unwrap_or_default(),
        not_matches: not_matches.unwrap_or_default(),
    })
}

fn parse_pattern(value: &Value, file: &Arc<str>) -> Result<Vec<Vec<String>>, RulesError> {
    let ValueKind::List(items) = &value.kind else {
        return Err(invalid(
            file,
            value.line,
            value.column,
            format!("`pattern` must be a list, found {}", describe(&value.kind)),
        ));
    };
    if items.is_empty() {
        return Err(invalid(
            file,
            value.line,
            value.column,
            "`pattern` cannot be empty".to_string(),
        ));
    }
    let mut pattern = Vec::with_capacity(items.len());
    for item in items {
        let alternatives = match &item.kind {
            ValueKind::Str(s) => vec![s.clone()],
            ValueKind::List(alts) if alts.is_empty() => {
                return Err(invalid(
                    file,
                    item.line,
                    item.column,
                    "a list of alternatives in `pattern` cannot be empty".to_string(),
                ))
            }
            ValueKind::List(alts) => strings(alts, file, "an alternative in `pattern`")?,
            other => {
                return Err(invalid(
                    file,
                    item.line,
                    item.column,
                    format!(
                        "a `pattern` element must be a string or a list of strings, found {}",
                        describe(other)
                    ),
                ))
            }
        };
        pattern.push(alternatives);
    }
    Ok(pattern)
}

fn parse_decision(value: &Value, file: &Arc<str>) -> Result<Decision, RulesError> {
    let decision = match &value.kind {
        ValueKind::Str(s) => match s.as_str() {
            "allow" => Some(Decision::Allow),
            "prompt" => Some(Decision::Prompt),
            "forbidden" => Some(Decision::Forbidden),
            _ => None,
        },
        _ => None,
    };
    decision.ok_or_else(|| {
        let found = match &value.kind {
            ValueKind::Str(s) => render_str(s),
            other => describe(other),
        };
        invalid(
            file,
            value.line,
            value.column,
            format!("`decision` must be \"allow\", \"prompt\" or \"forbidden\", found {found}"),
        )
    })
}

fn parse_justification(value: &Value, file: &Arc<str>) -> Result<String, RulesError> {
    match &value.kind {
        ValueKind::Str(s) if s.trim().is_empty() => Err(invalid(
            file,
            value.line,
            value.column,
            "`justification` cannot be empty".to_string(),
        )),
        ValueKind::Str(s) => Ok(s.clone()),
        other => Err(invalid(
            file,
            value.line,
            value.column,
            format!(
                "`justification` must be a string, found {}",
                describe(other)
            ),
        )),
    }
}

/// `match` / `not_match`: a list whose items are a command line (split like a shell would)
/// or a list of words.
fn parse_examples(
    value: &Value,
    name: &str,
    file: &Arc<str>,
) -> Result<Vec<Vec<String>>, RulesError> {
    let ValueKind::List(items) = &value.kind else {
        return Err(invalid(
            file,
            value.line,
            value.column,
            format!("`{name}` must be a list, found {}", describe(&value.kind)),
        ));
    };
    let mut examples = Vec::with_capacity(items.len());
    for item in items {
        let words = match &item.kind {
            ValueKind::Str(s) => shell::split(s).map_err(|why| {
                invalid(
                    file,
                    item.line,
                    item.column,
                    format!("`{name}` example {}: {why}", render_str(s)),
                )
            })?,
            ValueKind::List(words) => {
                strings(words, file, &format!("a word of a `{name}` example"))?
            }
            other => {
                return Err(invalid(
                    file,
                    item.line,
                    item.column,
                    format!(
                        "a `{name}` example must be a string or a list of strings, found {}",
                        describe(other)
                    ),
                ))
            }
        };
        if words.is_empty() {
            return Err(invalid(
                file,
                item.line,
                item.column,
                format!("a `{name}` example cannot be empty"),
            ));
        }
        examples.push(words);
    }
    Ok(examples)
}

impl Declared {
    /// Checks the examples: each `match` example must match the rule, no `not_match` example
    /// may. An example's first word stands for the program, as a path or a bare name.
    pub(crate) fn check_examples(&self) -> Result<(), RulesError> {
        let failing = |example: &Vec<String>, expected_match: bool| RulesError::Example {
            file: self.rule.file.to_string(),
            line: self.rule.line,
            rule: self.rule.render(),
            example: render_words(example),
            expected_match,
        };
        for example in &self.matches {
            if !self.rule.matches_example(example) {
                return Err(failing(example, true));
            }
        }
        for example in &self.not_matches {
            if self.rule.matches_example(example) {
                return Err(failing(example, false));
            }
        }
        Ok(())
    }
}

/// Every element of `items` as a string; `what` names one element in the error.
fn strings(items: &[Value], file: &Arc<str>, what: &str) -> Result<Vec<String>, RulesError> {
    items
        .iter()
        .map(|v| match &v.kind {
            ValueKind::Str(s) => Ok(s.clone()),
            other => Err(invalid(
                file,
                v.line,
                v.column,
                format!("{what} must be a string, found {}", describe(other)),
            )),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parser;

    fn declare_one(src: &str) -> Result<Declared, RulesError> {
        let mut calls = parser::parse(src).expect("syntax");
        assert_eq!(calls.len(), 1);
        declare(calls.remove(0), &Arc::from("t.rules"))
    }

    pub(crate) fn rule(src: &str) -> Rule {
        declare_one(src).expect("valid rule").rule
    }

    fn invalid_message(src: &str) -> (usize, usize, String) {
        match declare_one(src) {
            Err(RulesError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected an invalid-rule error, got {other:?}"),
        }
    }

    #[test]
    fn decision_defaults_to_allow_and_arguments_come_in_any_order() {
        let r = rule("prefix_rule(justification = 'why', pattern = ['ls'])");
        assert_eq!(r.decision, Decision::Allow);
        assert_eq!(r.justification.as_deref(), Some("why"));
        assert_eq!(r.pattern, vec![vec!["ls".to_string()]]);
        let r = rule("prefix_rule(decision='forbidden', pattern=['rm', ['-rf', '-fr']])");
        assert_eq!(r.decision, Decision::Forbidden);
        assert_eq!(r.render(), r#"["rm", ["-rf", "-fr"]]"#);
    }

    #[test]
    fn wrong_arguments_and_types_are_errors_with_their_position() {
        assert_eq!(
            invalid_message("host_executable(name='git', paths=[])"),
            (
                1,
                1,
                "unknown function `host_executable`: a rules file holds only prefix_rule(...) calls"
                    .into()
            )
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], reason='x')"),
            (
                1,
                28,
                format!("unknown keyword argument `reason`: prefix_rule takes {ARGUMENTS}")
            )
        );
        assert_eq!(
            invalid_message("prefix_rule(decision='prompt')"),
            (1, 1, "prefix_rule needs a `pattern` argument".into())
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], pattern=['b'])"),
            (1, 28, "keyword argument `pattern` given twice".into())
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern='git')"),
            (1, 21, "`pattern` must be a list, found a string".into())
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=[])"),
            (1, 21, "`pattern` cannot be empty".into())
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['git', []])"),
            (
                1,
                29,
                "a list of alternatives in `pattern` cannot be empty".into()
            )
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['git', ['a', ['b']]])"),
            (
                1,
                35,
                "an alternative in `pattern` must be a string, found a list".into()
            )
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=[1])"),
            (
                1,
                22,
                "a `pattern` element must be a string or a list of strings, found `1`".into()
            )
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], decision='deny')"),
            (
                1,
                37,
                "`decision` must be \"allow\", \"prompt\" or \"forbidden\", found \"deny\"".into()
            )
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], decision=None)").2,
            "`decision` must be \"allow\", \"prompt\" or \"forbidden\", found `None`"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], justification=' ')").2,
            "`justification` cannot be empty"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], justification=['x'])").2,
            "`justification` must be a string, found a list"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], match='a b')").2,
            "`match` must be a list, found a string"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], not_match=[''])").2,
            "a `not_match` example cannot be empty"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], match=[[]])").2,
            "a `match` example cannot be empty"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], match=[['a', 2]])").2,
            "a word of a `match` example must be a string, found `2`"
        );
        assert_eq!(
            invalid_message("prefix_rule(pattern=['a'], match=[\"a 'b\"])").2,
            "`match` example \"a 'b\": unterminated single quote"
        );
    }

    #[test]
    fn examples_are_checked_against_their_rule() {
        let ok = declare_one(
            "prefix_rule(pattern=['git', ['push', 'fetch']], match=[['git', 'push'], '/usr/bin/git fetch origin'], not_match=['git status', ['git']])",
        )
        .unwrap();
        assert!(ok.check_examples().is_ok());

        let bad =
            declare_one("\nprefix_rule(pattern=['git', 'push'], match=['git pull'])").unwrap();
        match bad.check_examples() {
            Err(RulesError::Example {
                file,
                line,
                rule,
                example,
                expected_match,
            }) => {
                assert_eq!(file, "t.rules");
                assert_eq!(line, 2);
                assert_eq!(rule, r#"["git", "push"]"#);
                assert_eq!(example, r#"["git", "pull"]"#);
                assert!(expected_match);
            }
            other => panic!("expected an example error, got {other:?}"),
        }
        let bad = declare_one("prefix_rule(pattern=['git'], not_match=[['git', 'x y']])").unwrap();
        let err = bad.check_examples().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"t.rules:1: rule ["git"]: not_match example ["git", "x y"] matches it"#
        );
    }
}
