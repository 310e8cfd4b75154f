//! Text from the server, made safe for a terminal. Message text, names and error texts are
//! written by other people: an ESC or OSC sequence in them would act on the reader's
//! terminal (move the cursor, rewrite the title, forge earlier lines, write files in some
//! terminals). The CLI's plain output shows every control character escaped (`\x1b`), and
//! the bidirectional overrides that reorder what is shown; `--json` output is JSON already.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character escaped, except line feed and tab (multi-line
/// messages stay readable; neither can move the cursor back over earlier output).
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let n = c as u32;
            if n <= 0xff {
                let _ = write!(out, "\\x{n:02x}");
            } else {
                let _ = write!(out, "\\u{{{n:x}}}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        // C0, DEL and C1 (U+009B is a one-character CSI in many terminals).
        c if c.is_control() => true,
        // Bidirectional embeddings, overrides and isolates: they reorder what is shown.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(terminal_safe("plain text"), "plain text");
        assert_eq!(terminal_safe("a\tb\nc"), "a\tb\nc");
        assert_eq!(
            terminal_safe("\x1b]0;owned\x07\x1b[2J"),
            "\\x1b]0;owned\\x07\\x1b[2J"
        );
        assert_eq!(terminal_safe("over\rwrite"), "over\\x0dwrite");
        assert_eq!(terminal_safe("\u{9b}31m"), "\\x9b31m");
        assert_eq!(terminal_safe("\u{7f}"), "\\x7f");
        assert_eq!(terminal_safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(terminal_safe("résumé ✓"), "résumé ✓");
    }
}
