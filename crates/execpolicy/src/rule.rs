//! A prefix rule: matching it against an executed program, and rendering it for messages.

use std::path::Path;
use std::sync::Arc;

use crate::Decision;

/// One `prefix_rule(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Each element lists its alternatives (one for a plain string); never empty.
    pub(crate) pattern: Vec<Vec<String>>,
    pub(crate) decision: Decision,
    pub(crate) justification: Option<String>,
    /// The file's name as given to `Rules::parse`, shared by its rules.
    pub(crate) file: Arc<str>,
    /// The line of the `prefix_rule` name.
    pub(crate) line: usize,
}

impl Rule {
    /// Whether the rule matches `program` run with `argv` (`argv[0]` is not looked at).
    ///
    /// The pattern's first element is compared with the program's file name, or, for an
    /// alternative containing `/`, with the whole program path; the other elements with
    /// `argv[1..]`, word by word.
    pub(crate) fn matches(&self, program: &Path, argv: &[String]) -> bool {
        let Some((first, rest)) = self.pattern.split_first() else {
            return false;
        };
        let args = argv.get(1..).unwrap_or_default();
        if rest.len() > args.len() {
            return false;
        }
        let name = program.file_name().and_then(|name| name.to_str());
        let program_matches = first.iter().any(|alt| {
            if alt.contains('/') {
                program.as_os_str() == alt.as_str()
            } else {
                name == Some(alt.as_str())
            }
        });
        program_matches
            && rest
                .iter()
                .zip(args)
                .all(|(alts, arg)| alts.iter().any(|alt| alt == arg))
    }

    /// Whether the rule matches an example command, whose first word is the program.
    pub(crate) fn matches_example(&self, example: &[String]) -> bool {
        match example.first() {
            Some(program) => self.matches(Path::new(program), example),
            None => false,
        }
    }

    /// The pattern as it could be written in the rules file, e.g. `["git", ["push", "fetch"]]`.
    pub(crate) fn render(&self) -> String {
        let items: Vec<String> = self
            .pattern
            .iter()
            .map(|alts| match alts.as_slice() {
                [single] => render_str(single),
                _ => render_words(alts),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// `file:line` of the rule.
    pub(crate) fn origin(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A list of strings as written in a rules file, e.g. `["git", "push"]`.
pub(crate) fn render_words(words: &[String]) -> String {
    let items: Vec<String> = words.iter().map(|w| render_str(w)).collect();
    format!("[{}]", items.join(", "))
}

/// A double-quoted string literal that reads back as `s`.
pub(crate) fn render_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let code = u32::from(c);
                if code < 0x80 {
                    out.push_str(&format!("\\x{code:02x}"));
                } else {
                    out.push_str(&format!("\\u{code:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::declare::tests::rule;
    use crate::lexer::{Lexer, TokenKind};

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn matches_an_argv_prefix_by_program_basename() {
        let r = rule("prefix_rule(pattern=['git', 'push'])");
        let git = Path::new("/usr/bin/git");
        assert!(r.matches(git, &argv(&["git", "push"])));
        assert!(r.matches(git, &argv(&["git", "push", "origin", "main"])));
        assert!(!r.matches(git, &argv(&["git", "pull"])));
        assert!(!r.matches(git, &argv(&["git"])));
        assert!(!r.matches(git, &[]));
        assert!(!r.matches(Path::new("/usr/bin/gitk"), &argv(&["git", "push"])));
        // argv[0] is not looked at: the program that runs is what counts.
        assert!(r.matches(git, &argv(&["anything", "push"])));
        assert!(!r.matches(Path::new("/bin/sh"), &argv(&["git", "push"])));
        // A relative or bare program name works the same way.
        assert!(r.matches(Path::new("git"), &argv(&["git", "push"])));
        assert!(r.matches(Path::new("./bin/git"), &argv(&["x", "push"])));
    }

    #[test]
    fn a_single_word_pattern_matches_with_any_arguments() {
        let r = rule("prefix_rule(pattern=['ls'])");
        assert!(r.matches(Path::new("/bin/ls"), &argv(&["ls"])));
        assert!(r.matches(Path::new("/bin/ls"), &argv(&["ls", "-la", "/"])));
        assert!(r.matches(Path::new("/bin/ls"), &[]));
    }

    #[test]
    fn alternatives_anywhere_in_the_pattern() {
        let r = rule("prefix_rule(pattern=[['python3', 'python'], '-c'])");
        assert!(r.matches(
            Path::new("/usr/bin/python3"),
            &argv(&["python3", "-c", "1"])
        ));
        assert!(r.matches(Path::new("/usr/bin/python"), &argv(&["python", "-c"])));
        assert!(!r.matches(Path::new("/usr/bin/python2"), &argv(&["python2", "-c"])));
        let r = rule("prefix_rule(pattern=['git', ['status', 'diff'], '--stat'])");
        let git = Path::new("/usr/bin/git");
        assert!(r.matches(git, &argv(&["git", "diff", "--stat"])));
        assert!(r.matches(git, &argv(&["git", "status", "--stat", "x"])));
        assert!(!r.matches(git, &argv(&["git", "log", "--stat"])));
        assert!(!r.matches(git, &argv(&["git", "diff"])));
    }

    #[test]
    fn a_first_word_with_a_slash_is_compared_with_the_whole_path() {
        let r = rule("prefix_rule(pattern=[['/usr/bin/rm', 'shred']])");
        assert!(r.matches(Path::new("/usr/bin/rm"), &argv(&["rm"])));
        assert!(!r.matches(Path::new("/bin/rm"), &argv(&["rm"])));
        assert!(r.matches(Path::new("/bin/shred"), &argv(&["shred"])));
    }

    #[test]
    fn a_program_name_that_is_not_utf8_matches_no_basename() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let r = rule("prefix_rule(pattern=['git'])");
        let odd = Path::new(OsStr::from_bytes(b"/usr/bin/g\xffit"));
        assert!(!r.matches(odd, &argv(&["git"])));
    }

    #[test]
    fn rendering_reads_back_as_the_same_strings() {
        let words = argv(&["a\"b", "c\\d", "e\nf", "\u{1}", "\u{85}", "é"]);
        let rendered = render_words(&words);
        assert_eq!(
            rendered,
            r#"["a\"b", "c\\d", "e\nf", "\x01", "\u0085", "é"]"#
        );
        let mut lexer = Lexer::new(&rendered);
        let mut read = Vec::new();
        loop {
            match lexer.next_token().unwrap().kind {
                TokenKind::Str(s) => read.push(s),
                TokenKind::Eof => break,
                _ => {}
            }
        }
        assert_eq!(read, words);
    }
}
