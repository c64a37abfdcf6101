//! A CLIP model folder in the open_clip / immich export layout: reading, checking, stamping.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ClipError, Result};
use crate::preprocess::PreprocessConfig;

/// The files a model folder must hold, relative to it. Their bytes make the stamp.
pub const MODEL_FILES: [&str; 6] = [
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "textual/tokenizer_config.json",
];

#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub path: PathBuf,
    pub embed_dim: usize,
    pub context_length: usize,
    /// `logit_scale` for zero-shot logits; 100 for CLIP unless config.json says otherwise.
    pub logit_scale: f32,
    pub preprocess: PreprocessConfig,
    pub pad_token: Option<String>,
}

#[derive(Deserialize)]
struct Config {
    embed_dim: usize,
    #[serde(default)]
    text_cfg: TextCfg,
    #[serde(default)]
    logit_scale: Option<f32>,
}

#[derive(Deserialize, Default)]
struct TextCfg {
    context_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    pad_token: Option<serde_json::Value>,
}

impl ModelFolder {
    /// Check that every file is there and the JSON files parse and agree.
    pub fn open(path: &Path) -> Result<Self> {
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
        let preprocess = PreprocessConfig::from_json(&read("visual/preprocess_cfg.json")?)
            .map_err(|e| err(format!("visual/preprocess_cfg.json: {e}")))?;
        let tok_cfg: TokenizerConfig = serde_json::from_str(&read("textual/tokenizer_config.json")?)
            .map_err(|e| err(format!("textual/tokenizer_config.json: {e}")))?;
        // pad_token is a string, or an AddedToken object {"content": ...} in newer exports
        let pad_token = match tok_cfg.pad_token {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(String::from),
            _ => None,
        };
        Ok(ModelFolder {
            path: path.to_path_buf(),
            embed_dim: config.embed_dim,
            context_length: config.text_cfg.context_length.unwrap_or(77),
            logit_scale: config.logit_scale.unwrap_or(100.0),
            preprocess,
            pad_token,
        })
    }

    /// SHA-256 over each file's name and bytes, in a fixed order: changes when any file does.
    pub fn stamp(&self) -> Result<String> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for f in MODEL_FILES {
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
        Ok(hex::encode(h.finalize()))
    }

    /// Sizes and modification times of the files: a cheap check that nothing changed since
    /// the stamp was taken, done on every call before a cached session is reused.
    pub fn fingerprint(&self) -> Vec<(u64, Option<SystemTime>)> {
        MODEL_FILES
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
        let m = ModelFolder::open(&tiny()).unwrap();
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
        let e = ModelFolder::open(&dir).unwrap_err();
        assert!(e.message.contains("missing visual/model.onnx"), "{e}");
        assert!(e.message.contains("textual/tokenizer.json"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
