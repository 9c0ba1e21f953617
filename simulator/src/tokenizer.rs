//! The approximate tokenizer: splits text roughly the way BPE tokenizers do (about four
//! characters of English per token). Prompts and generated text go through the same rules, so
//! `usage` always agrees with what was sent and streamed.
//!
//! Rules: whitespace joins the piece that follows it; a run of ASCII letters and digits gives one
//! token per [`MAX_WORD_PIECE`] characters; any other character (punctuation, non-ASCII) is one
//! token; trailing whitespace is one token.

/// The longest run of ASCII letters or digits that is one token.
pub const MAX_WORD_PIECE: usize = 4;

/// Splits `text` into token pieces. Concatenated, the pieces give back `text` exactly.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { rest: text }
}

/// The number of tokens in `text`.
pub fn count(text: &str) -> usize {
    pieces(text).count()
}

/// Iterator over the token pieces of a text; see [`pieces`].
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut chars = self.rest.char_indices().skip_while(|(_, c)| c.is_whitespace());
        let end = match chars.next() {
            None => self.rest.len(),
            Some((start, c)) if c.is_ascii_alphanumeric() => {
                let mut end = start + 1;
                for (i, c) in chars.take(MAX_WORD_PIECE - 1) {
                    if !c.is_ascii_alphanumeric() {
                        break;
                    }
                    end = i + 1;
                }
                end
            }
            Some((start, c)) => start + c.len_utf8(),
        };
        let (piece, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_punctuation_and_spaces() {
        let got: Vec<&str> = pieces("Hello, wonderful world.").collect();
        assert_eq!(got, ["Hell", "o", ",", " wond", "erfu", "l", " worl", "d", "."]);
    }

    #[test]
    fn pieces_rebuild_the_text() {
        for text in ["", " ", "a  b\n\tc ", "naïve café 東京", "{\"a\": [1, 2]}", "x  "] {
            assert_eq!(pieces(text).collect::<String>(), text);
        }
    }

    #[test]
    fn counts() {
        assert_eq!(count(""), 0);
        assert_eq!(count("   "), 1);
        assert_eq!(count(" the"), 1);
        assert_eq!(count("東京"), 2);
        assert_eq!(count("12345678"), 2);
        // About four characters a token on ordinary English.
        let text = "The quick brown fox jumps over the lazy dog and keeps running far away.";
        let ratio = text.len() as f64 / count(text) as f64;
        assert!((3.0..5.0).contains(&ratio), "{ratio}");
    }
}
