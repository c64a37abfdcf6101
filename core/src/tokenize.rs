//! Text to token ids with the `tokenizers` crate and the model's `tokenizer.json`: CLIP's BPE
//! framed as open_clip frames it, any other tokenizer by its own post-processor.
//!
//! OpenAI's reference tokenizer cleans text before BPE: `ftfy.fix_text`, `html.unescape`
//! twice, whitespace collapsed, lower-cased. The tokenizer.json (as transformers writes it for
//! CLIP) covers NFC, whitespace and lower-casing; the rest of the cleaning is done here.
//! ftfy's mojibake repair has no Rust equivalent and is not reproduced; its cheap character
//! fixes (curly quotes, Latin ligatures, full-width forms, control characters) are.

use std::path::Path;

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{ClipError, ErrorKind, Result};
use crate::model::{is_flores_code, TextClean};

/// How the ids are framed: CLIP's BPE by open_clip's rules, or the tokenizer.json's own
/// post-processor (SentencePiece, XLM-R, NLLB, LaBSE...) the way immich's loader calls it.
enum Framing {
    ClipBpe { sot: u32, eot: u32, pad: u32 },
    Own { clean: TextClean, prefix: Option<String> },
}

pub struct ClipTokenizer {
    tok: Tokenizer,
    context: usize,
    framing: Framing,
}

/// A batch of texts as the text graph takes them, row-major `[n, context]`.
pub struct TokenBatch {
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

impl ClipTokenizer {
    /// Load `tokenizer.json`. A vocabulary with `<|startoftext|>` is CLIP's BPE, framed here
    /// as open_clip does; any other uses its own post-processor, truncation to the context and
    /// padding with `pad_token` (from tokenizer_config.json). `language` is put before every
    /// text (nllb-clip reads a FLORES-200 code first); it must be one of the vocabulary's tokens.
    pub fn from_file(
        path: &Path,
        context: usize,
        pad_token: Option<&str>,
        clean: TextClean,
        language: Option<&str>,
    ) -> std::result::Result<Self, String> {
        if context < 2 {
            return Err(format!("context_length {context} is too small"));
        }
        let mut tok =
            Tokenizer::from_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let id = |tok: &Tokenizer, t: &str| {
            tok.token_to_id(t).ok_or_else(|| format!("{} has no token {t}", path.display()))
        };
        if let Some(l) = language {
            if !is_flores_code(l) || tok.token_to_id(l).is_none() {
                return Err(format!(
                    "the tokenizer has no language token \"{l}\" (a FLORES-200 code such as eng_Latn)"
                ));
            }
        }
        let framing = if tok.token_to_id("<|startoftext|>").is_some() {
            // truncation and padding are done in encode, the way open_clip does them
            tok.with_truncation(None).map_err(|e| e.to_string())?;
            tok.with_padding(None);
            let pad = match pad_token {
                Some(p) => id(&tok, p)?,
                None => 0,
            };
            Framing::ClipBpe { sot: id(&tok, "<|startoftext|>")?, eot: id(&tok, "<|endoftext|>")?, pad }
        } else {
            let pad_token = pad_token.ok_or("tokenizer_config.json names no pad_token")?.to_string();
            let pad_id = id(&tok, &pad_token)?;
            tok.with_truncation(Some(TruncationParams { max_length: context, ..Default::default() }))
                .map_err(|e| e.to_string())?;
            tok.with_padding(Some(PaddingParams {
                strategy: PaddingStrategy::Fixed(context),
                direction: PaddingDirection::Right,
                pad_id,
                pad_token,
                ..Default::default()
            }));
            Framing::Own { clean, prefix: language.map(String::from) }
        };
        Ok(ClipTokenizer { tok, context, framing })
    }

    pub fn has_token(&self, token: &str) -> bool {
        self.tok.token_to_id(token).is_some()
    }

    pub fn context_length(&self) -> usize {
        self.context
    }

    /// The framed ids of one text, unpadded for CLIP's BPE (open_clip's `tokenize(...,
    /// truncate=True)`: start and end tokens, the last id forced to end-of-text), padded to the
    /// context by the tokenizer's own rules otherwise; with the attention mask.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        check_length(text)?;
        let failed = |e| ClipError::new(ErrorKind::InvalidText, format!("could not tokenise text: {e}"));
        match &self.framing {
            Framing::ClipBpe { sot, eot, .. } => {
                let enc = self.tok.encode(clean_text(text).as_str(), false).map_err(failed)?;
                let mut ids = Vec::with_capacity(self.context);
                ids.push(*sot);
                ids.extend(enc.get_ids().iter().take(self.context - 2));
                ids.push(*eot);
                let mask = vec![1; ids.len()];
                Ok((ids, mask))
            }
            Framing::Own { clean, prefix } => {
                let mut t = clean_for(text, *clean);
                if let Some(p) = prefix {
                    t.insert_str(0, p);
                }
                let enc = self.tok.encode(t.as_str(), true).map_err(failed)?;
                Ok((enc.get_ids().to_vec(), enc.get_attention_mask().to_vec()))
            }
        }
    }

    /// A batch padded to the context length.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let pad = match self.framing {
            Framing::ClipBpe { pad, .. } => pad,
            Framing::Own { .. } => 0,
        };
        let mut ids = vec![i64::from(pad); texts.len() * self.context];
        let mut attention_mask = vec![0i64; texts.len() * self.context];
        for (row, t) in texts.iter().enumerate() {
            let (row_ids, row_mask) = self.encode(t)?;
            let at = row * self.context;
            for (slot, id) in ids[at..at + self.context].iter_mut().zip(row_ids) {
                *slot = i64::from(id);
            }
            for (slot, m) in attention_mask[at..at + self.context].iter_mut().zip(row_mask) {
                *slot = i64::from(m);
            }
        }
        Ok(TokenBatch { ids, attention_mask })
    }
}

/// open_clip's cleaning for Hugging Face tokenizers: basic_clean (ftfy, HTML unescaped twice,
/// stripped), then whitespace collapsed; `lower` also lower-cases; `canonicalize` (SigLIP)
/// turns _ into a space, drops ASCII punctuation, lower-cases and collapses whitespace.
pub fn clean_for(text: &str, clean: TextClean) -> String {
    let basic = clean_text(text);
    let collapse = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match clean {
        TextClean::Whitespace => collapse(&basic),
        TextClean::Lower => collapse(&basic).to_lowercase(),
        TextClean::Canonicalize => {
            let kept: String =
                basic.replace('_', " ").chars().filter(|c| !c.is_ascii_punctuation()).collect();
            collapse(&kept.to_lowercase())
        }
    }
}

/// Longest text that is tokenised, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// The model reads a few dozen tokens; the tokenizer would clean and split all of a text
/// first, so a huge one is refused rather than tokenised (or sent to the service) for nothing.
pub fn check_length(text: &str) -> Result<()> {
    // A text has at least as many bytes as characters: a short one is not counted.
    if text.len() <= MAX_TEXT_CHARS {
        return Ok(());
    }
    let chars = text.chars().count();
    if chars <= MAX_TEXT_CHARS {
        return Ok(());
    }
    Err(ClipError::new(
        ErrorKind::InvalidText,
        format!("text has {chars} characters; at most {MAX_TEXT_CHARS} are embedded"),
    )
    .hint("A CLIP text is a short description (the model reads its first few dozen tokens)."))
}

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
    use super::{clean_for, clean_text};
    use crate::model::TextClean;

    #[test]
    fn canonicalize_follows_open_clip() {
        assert_eq!(
            clean_for("  A Photo_of  a DOG's toy!\n", TextClean::Canonicalize),
            "a photo of a dogs toy"
        );
        assert_eq!(clean_for(" Two \t words ", TextClean::Whitespace), "Two words");
        assert_eq!(clean_for("Mixed CASE", TextClean::Lower), "mixed case");
    }

    #[test]
    fn cleaning_follows_ftfy_and_double_unescape() {
        assert_eq!(clean_text("\u{201c}hi\u{201d} don\u{2019}t"), "\"hi\" don't");
        assert_eq!(clean_text("\u{fb01}sh"), "fish");
        assert_eq!(clean_text("\u{ff21}\u{ff11}"), "A1");
        assert_eq!(clean_text("a &amp;amp; b &lt;"), "a & b <");
        assert_eq!(clean_text("x\u{7}y\u{feff}"), "xy");
    }
}
