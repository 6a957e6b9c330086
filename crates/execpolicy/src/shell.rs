//! Splitting a `match` / `not_match` example written as one string into words, the way a
//! POSIX shell splits a simple command: blanks separate words, single quotes keep everything,
//! double quotes keep everything but `\` before `\`, `"`, `$`, `` ` `` or a newline, and a
//! backslash outside quotes keeps the next character. Nothing is expanded (`$HOME`, `*` and
//! `~` stay as written) and `#` is an ordinary character.

/// The words of `text`, or what is wrong with its quoting.
pub(crate) fn split(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word has started: `''` is an empty word, not nothing.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('\\' | '"' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("a backslash at the end escapes nothing"),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_on_blanks_and_honours_quotes() {
        assert_eq!(
            split("git  push\torigin").unwrap(),
            ["git", "push", "origin"]
        );
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split("echo 'a b' \"c d\"").unwrap(), ["echo", "a b", "c d"]);
        assert_eq!(split("echo '' x").unwrap(), ["echo", "", "x"]);
        assert_eq!(split("a'b'\"c\"d").unwrap(), ["abcd"]);
        assert_eq!(
            split(r#"echo "\"\\\$\`\n""#).unwrap(),
            ["echo", "\"\\$`\\n"]
        );
        assert_eq!(split(r"echo a\ b \'").unwrap(), ["echo", "a b", "'"]);
        assert_eq!(
            split("echo '\\n' $HOME # x").unwrap(),
            ["echo", "\\n", "$HOME", "#", "x"]
        );
    }

    #[test]
    fn bad_quoting_is_an_error() {
        assert_eq!(split("echo 'a"), Err("unterminated single quote"));
        assert_eq!(split("echo \"a\\\""), Err("unterminated double quote"));
        assert_eq!(
            split("echo \\"),
            Err("a backslash at the end escapes nothing")
        );
    }
}
