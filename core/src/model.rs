//! A CLIP model folder in the open_clip / immich export layout: reading, checking, stamping.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ClipError, Result};
use crate::onnx_files;
use crate::preprocess::{Flavour, PreprocessConfig};

/// The files a model folder must hold, relative to it. Their bytes (and those of the external
/// data files the graphs name) make the stamp.
pub const MODEL_FILES: [&str; 6] = [
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "textual/tokenizer_config.json",
];

/// How a model's image and text scores are meant to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Softmax-trained CLIP (OpenAI, LAION, DFN, XLM-Roberta towers): logit_scale x cosine.
    Clip,
    /// Sigmoid-trained (SigLIP, SigLIP2): probability = sigmoid(logit_scale x cosine + logit_bias).
    Siglip,
    /// M-CLIP: a multilingual text encoder (input_ids, attention_mask) distilled onto a CLIP image tower.
    Mclip,
    /// nllb-clip: an NLLB text encoder that reads a FLORES-200 language code before the text.
    Nllb,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Clip => "clip",
            Family::Siglip => "siglip",
            Family::Mclip => "mclip",
            Family::Nllb => "nllb",
        }
    }
}

/// The cleaning open_clip applies before its Hugging Face tokenizers
/// (`text_cfg.tokenizer_kwargs.clean`); CLIP's own BPE has its fixed cleaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextClean {
    Whitespace,
    Lower,
    Canonicalize,
}

/// `clip.register_model`'s options. Those that change embeddings (preprocess, language) are
/// part of the stamp; the logit values only change how scores are read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Flavour>,
    /// FLORES-200 code put before every text (nllb-clip models), e.g. "eng_Latn".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_scale: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<f32>,
}

impl ModelOptions {
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let o: ModelOptions = serde_json::from_str(text)
            .map_err(|e| format!("{e} (known options: preprocess, language, logit_scale, logit_bias)"))?;
        if let Some(s) = o.logit_scale.filter(|s| !(s.is_finite() && *s > 0.0 && *s <= 1e4)) {
            return Err(format!("logit_scale must be a number in (0, 10000], not {s}"));
        }
        if let Some(b) = o.logit_bias.filter(|b| !(b.is_finite() && b.abs() <= 1e4)) {
            return Err(format!("logit_bias must be a number in [-10000, 10000], not {b}"));
        }
        if let Some(l) = &o.language {
            if !is_flores_code(l) {
                return Err(format!(
                    "language \"{l}\" is not a FLORES-200 code (three lower-case letters, _, a script: eng_Latn)"
                ));
            }
        }
        Ok(o)
    }

    /// The options that change embeddings, as stamped: empty for the defaults, so that a
    /// folder registered without options keeps the stamp it had before options existed.
    fn stamped(&self) -> String {
        let o = ModelOptions {
            preprocess: self.preprocess.filter(|p| *p != Flavour::OpenClip),
            language: self.language.clone(),
            logit_scale: None,
            logit_bias: None,
        };
        if o == ModelOptions::default() {
            String::new()
        } else {
            serde_json::to_string(&o).expect("options serialise")
        }
    }
}

/// `eng_Latn`, `zho_Hans`: FLORES-200's language_Script codes.
pub fn is_flores_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[..3].iter().all(u8::is_ascii_lowercase)
        && b[3] == b'_'
        && b[4].is_ascii_uppercase()
        && b[5..].iter().all(u8::is_ascii_lowercase)
}

#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub path: PathBuf,
    pub embed_dim: usize,
    pub context_length: usize,
    /// `logit_scale` for zero-shot logits: the options', config.json's, else 100 (CLIP's).
    pub logit_scale: f32,
    /// SigLIP's trained bias, when known (options or config.json); None for softmax CLIP.
    pub logit_bias: Option<f32>,
    /// config.json says the model was trained with a sigmoid loss (SigLIP), whether or not
    /// the trained logit values came with it.
    pub sigmoid_trained: bool,
    pub preprocess: PreprocessConfig,
    pub pad_token: Option<String>,
    pub text_clean: TextClean,
    pub options: ModelOptions,
    /// Every file of the model relative to the folder: MODEL_FILES, then the external data
    /// files the two graphs name.
    pub files: Vec<String>,
    /// What registration should tell the user about this folder (it still works).
    pub warnings: Vec<Warning>,
}

/// A folder that loads but will not give the scores or vectors its user expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub message: String,
    pub hint: String,
}

#[derive(Deserialize)]
struct Config {
    embed_dim: usize,
    #[serde(default)]
    text_cfg: TextCfg,
    #[serde(default)]
    logit_scale: Option<f32>,
    #[serde(default)]
    logit_bias: Option<f32>,
    /// open_clip's model configs for SigLIP carry the initial bias (a sign of the sigmoid
    /// loss, not the trained value)
    #[serde(default)]
    init_logit_bias: Option<f32>,
    /// open_clip's `-quickgelu` configs say so; OpenAI's weights need it
    #[serde(default)]
    quick_gelu: bool,
}

#[derive(Deserialize, Default)]
struct TextCfg {
    context_length: Option<usize>,
    #[serde(default)]
    tokenizer_kwargs: Option<TokenizerKwargs>,
}

#[derive(Deserialize, Default)]
struct TokenizerKwargs {
    clean: Option<String>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    pad_token: Option<serde_json::Value>,
}

/// The image preprocessing of the folder at `path`, alone: what a session that sends tensors to
/// the inference service needs (ModelFolder::open also reads the configs and scans both graphs).
pub fn preprocess_config(path: &Path, options: &ModelOptions) -> Result<PreprocessConfig> {
    let err = |m: String| ClipError::model(&path.display().to_string(), m);
    let f = "visual/preprocess_cfg.json";
    let text = fs::read_to_string(path.join(f)).map_err(|e| err(format!("cannot read {f}: {e}")))?;
    let mut preprocess = PreprocessConfig::from_json(&text).map_err(|e| err(format!("{f}: {e}")))?;
    preprocess.flavour = options.preprocess.unwrap_or(Flavour::OpenClip);
    Ok(preprocess)
}

impl ModelFolder {
    /// Check that every file is there and the JSON files parse and agree.
    pub fn open(path: &Path, options: &ModelOptions) -> Result<Self> {
        let shown = path.display().to_string();
        let err = |m: String| ClipError::model(&shown, m);
        if !path.is_dir() {
            return Err(err("is not a readable directory".into()));
        }
        let missing: Vec<&str> = MODEL_FILES.iter().copied().filter(|f| !path.join(f).is_file()).collect();
        if !missing.is_empty() {
            return Err(err(format!("missing {}", missing.join(", "))));
        }
        let read =
            |f: &str| fs::read_to_string(path.join(f)).map_err(|e| err(format!("cannot read {f}: {e}")));
        let config: Config =
            serde_json::from_str(&read("config.json")?).map_err(|e| err(format!("config.json: {e}")))?;
        if config.embed_dim == 0 {
            return Err(err("config.json: embed_dim must be positive".into()));
        }
        let preprocess = preprocess_config(path, options)?;
        let tok_cfg: TokenizerConfig = serde_json::from_str(&read("textual/tokenizer_config.json")?)
            .map_err(|e| err(format!("textual/tokenizer_config.json: {e}")))?;
        // pad_token is a string, or an AddedToken object {"content": ...} in newer exports
        let pad_token = match tok_cfg.pad_token {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(String::from),
            _ => None,
        };
        let clean = config.text_cfg.tokenizer_kwargs.and_then(|k| k.clean);
        let text_clean = match clean.as_deref() {
            None | Some("whitespace") => TextClean::Whitespace,
            Some("lower") => TextClean::Lower,
            Some("canonicalize") => TextClean::Canonicalize,
            Some(other) => {
                return Err(err(format!(
                    "config.json: text_cfg.tokenizer_kwargs.clean \"{other}\" is not one of whitespace, lower, canonicalize"
                )))
            }
        };
        let logit_scale = options.logit_scale.or(config.logit_scale).unwrap_or(100.0);
        if !(logit_scale.is_finite() && logit_scale > 0.0) {
            return Err(err(format!("config.json: logit_scale must be positive, not {logit_scale}")));
        }
        let logit_bias = options.logit_bias.or(config.logit_bias);
        let mut files: Vec<String> = MODEL_FILES.iter().map(|f| f.to_string()).collect();
        let mut exact_gelu = false;
        for tower in ["visual", "textual"] {
            let graph = format!("{tower}/model.onnx");
            let found = onnx_files::scan(&path.join(&graph)).map_err(|m| err(format!("{graph} {m}")))?;
            exact_gelu |= found.ops.contains("Erf") || found.ops.contains("Gelu");
            let external = found.external;
            let missing: Vec<String> =
                external.iter().map(|f| format!("{tower}/{f}")).filter(|f| !path.join(f).is_file()).collect();
            if !missing.is_empty() {
                return Err(err(format!("missing {} (external data of {graph})", missing.join(", ")))
                    .hint("Download every file of the model's repository (models/fetch_model.py does)."));
            }
            files.extend(external.into_iter().map(|f| format!("{tower}/{f}")));
        }
        let sigmoid_trained = logit_bias.is_some() || config.init_logit_bias.is_some();
        let mut warnings = Vec::new();
        if sigmoid_trained && logit_bias.is_none() {
            warnings.push(Warning {
                message: "the model was trained with a sigmoid loss (SigLIP), but neither config.json nor the options give its trained logit_scale and logit_bias".into(),
                hint: "Pass them as options, {\"logit_scale\": ..., \"logit_bias\": ...} (open_clip: model.logit_scale.exp() and model.logit_bias); until then, attributes without a calibration of their own score with CLIP's default (center 25.5, scale 1.5).".into(),
            });
        }
        let openai = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("__openai"));
        if openai && exact_gelu && !config.quick_gelu {
            warnings.push(Warning {
                message: "these graphs use exact GELU, but OpenAI's CLIP weights were trained with QuickGELU: its vectors differ from the original model's (cosine about 0.95-0.97)".into(),
                hint: "Export the model again with models/export_open_clip.py, which uses the activation the weights were trained with.".into(),
            });
        }
        Ok(ModelFolder {
            path: path.to_path_buf(),
            embed_dim: config.embed_dim,
            context_length: config.text_cfg.context_length.unwrap_or(77),
            logit_scale,
            logit_bias,
            sigmoid_trained,
            preprocess,
            pad_token,
            text_clean,
            options: options.clone(),
            files,
            warnings,
        })
    }

    /// SHA-256 over each file's name and bytes in a fixed order, then the options that change
    /// embeddings: changes when any file or such option does.
    pub fn stamp(&self) -> Result<String> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for f in &self.files {
            let mut file = fs::File::open(self.path.join(f)).map_err(|e| {
                ClipError::model(&self.path.display().to_string(), format!("cannot read {f}: {e}"))
            })?;
            h.update(f.as_bytes());
            h.update([0u8]);
            loop {
                let n = file.read(&mut buf).map_err(|e| {
                    ClipError::model(&self.path.display().to_string(), format!("cannot read {f}: {e}"))
                })?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        let options = self.options.stamped();
        if !options.is_empty() {
            h.update(b"options\0");
            h.update(options.as_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Sizes and modification times of the files: a cheap check that nothing changed since
    /// the stamp was taken, done on every call before a cached session is reused.
    pub fn fingerprint(&self) -> Vec<(u64, Option<SystemTime>)> {
        self.files
            .iter()
            .map(|f| match fs::metadata(self.path.join(f)) {
                Ok(m) => (m.len(), m.modified().ok()),
                Err(_) => (u64::MAX, None),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny-clip")
    }

    #[test]
    fn tiny_model_folder_opens() {
        let m = ModelFolder::open(&tiny(), &ModelOptions::default()).unwrap();
        assert_eq!((m.embed_dim, m.context_length, m.preprocess.size), (64, 77, 224));
        assert_eq!(m.pad_token.as_deref(), Some("<|endoftext|>"));
        assert_eq!(m.logit_scale, 100.0);
        assert_eq!(m.stamp().unwrap().len(), 64);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = std::env::temp_dir().join(format!("pg_clip_missing_{}", std::process::id()));
        fs::create_dir_all(dir.join("visual")).unwrap();
        fs::write(dir.join("config.json"), "{\"embed_dim\": 8}").unwrap();
        let e = ModelFolder::open(&dir, &ModelOptions::default()).unwrap_err();
        assert!(e.message.contains("missing visual/model.onnx"), "{e}");
        assert!(e.message.contains("textual/tokenizer.json"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
