//! Text to CLIP token ids with the `tokenizers` crate and the model's `tokenizer.json`.
//!
//! OpenAI's reference tokenizer cleans text before BPE: `ftfy.fix_text`, `html.unescape`
//! twice, whitespace collapsed, lower-cased. The tokenizer.json (as transformers writes it for
//! CLIP) covers NFC, whitespace and lower-casing; the rest of the cleaning is done here.
//! ftfy's mojibake repair has no Rust equivalent and is not reproduced; its cheap character
//! fixes (curly quotes, Latin ligatures, full-width forms, control characters) are.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{ClipError, ErrorKind, Result};

pub struct ClipTokenizer {
    tok: Tokenizer,
    context: usize,
    sot: u32,
    eot: u32,
    pad: u32,
}

impl ClipTokenizer {
    /// Load `tokenizer.json`; `pad_token` comes from tokenizer_config.json (immich pads with
    /// `<|endoftext|>`; the pooled position is the first end-of-text token either way).
    pub fn from_file(
        path: &Path,
        context: usize,
        pad_token: Option<&str>,
    ) -> std::result::Result<Self, String> {
        let mut tok =
            Tokenizer::from_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Truncation and padding are done below, the way open_clip does them.
        tok.with_truncation(None).map_err(|e| e.to_string())?;
        tok.with_padding(None);
        let id = |t: &str| tok.token_to_id(t).ok_or_else(|| format!("{} has no token {t}", path.display()));
        let sot = id("<|startoftext|>")?;
        let eot = id("<|endoftext|>")?;
        let pad = match pad_token {
            Some(p) => id(p)?,
            None => 0,
        };
        if context < 2 {
            return Err(format!("context_length {context} is too small"));
        }
        Ok(ClipTokenizer { tok, context, sot, eot, pad })
    }

    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Ids with start and end tokens, truncated to the context length with the last id forced
    /// to end-of-text (open_clip's `tokenize(..., truncate=True)`), without padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        // The model reads a few dozen tokens; the tokenizer would clean and split all of a text
        // first, so a huge one is refused rather than tokenised for nothing.
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ClipError::new(
                ErrorKind::InvalidText,
                format!("text has {chars} characters; at most {MAX_TEXT_CHARS} are embedded"),
            )
            .hint("A CLIP text is a short description (the model reads its first few dozen tokens)."));
        }
        let clean = clean_text(text);
        let enc = self
            .tok
            .encode(clean.as_str(), false)
            .map_err(|e| ClipError::new(ErrorKind::InvalidText, format!("could not tokenise text: {e}")))?;
        let mut ids = Vec::with_capacity(self.context);
        ids.push(self.sot);
        ids.extend(enc.get_ids().iter().take(self.context - 2));
        ids.push(self.eot);
        Ok(ids)
    }

    /// A batch padded to the context length, row-major `[texts.len(), context]`.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<i64>> {
        let mut out = vec![i64::from(self.pad); texts.len() * self.context];
        for (row, t) in texts.iter().enumerate() {
            let ids = self.encode(t)?;
            for (slot, id) in out[row * self.context..].iter_mut().zip(ids) {
                *slot = i64::from(id);
            }
        }
        Ok(out)
    }
}

/// Longest text that is tokenised, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// The parts of ftfy.fix_text + html.unescape(html.unescape(...)) that change CLIP tokens.
pub fn clean_text(text: &str) -> String {
    let once = htmlize::unescape(text);
    let twice = htmlize::unescape(once.as_ref());
    let mut out = String::with_capacity(twice.len());
    for c in twice.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' => out.push('\''),
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' => out.push('"'),
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            '\u{fb05}' | '\u{fb06}' => out.push_str("st"),
            // full-width ASCII variants and the ideographic space (ftfy's fix_character_width)
            '\u{ff01}'..='\u{ff5e}' => out.push(char::from_u32(c as u32 - 0xfee0).unwrap_or(c)),
            '\u{3000}' => out.push(' '),
            // ftfy's remove_control_chars keeps \t \n \r and drops the other C0 controls, DEL,
            // the deprecated format characters, the BOM and interlinear annotation marks
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}' => {}
            '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean_text;

    #[test]
    fn cleaning_follows_ftfy_and_double_unescape() {
        assert_eq!(clean_text("\u{201c}hi\u{201d} don\u{2019}t"), "\"hi\" don't");
        assert_eq!(clean_text("\u{fb01}sh"), "fish");
        assert_eq!(clean_text("\u{ff21}\u{ff11}"), "A1");
        assert_eq!(clean_text("a &amp;amp; b &lt;"), "a & b <");
        assert_eq!(clean_text("x\u{7}y\u{feff}"), "xy");
    }
}
