//! ONNX Runtime: the per-process environment, the two sessions of a model, batched inference.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

pub use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use rayon::prelude::*;

use crate::error::{ClipError, ErrorKind, Result};
use crate::model::{Family, ModelFolder};
use crate::preprocess;
use crate::tokenize::{ClipTokenizer, TokenBatch};
use crate::Interrupt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda,
    /// CUDA when the library has the CUDA provider and a GPU answers, else CPU.
    Auto,
}

impl Device {
    pub fn parse(s: &str) -> Option<Device> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda),
            "auto" => Some(Device::Auto),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// 0 lets ONNX Runtime choose (one thread per physical core).
    pub intra_op_threads: usize,
}

/// ort allows one environment per process, bound to the first library it loads.
static ENV: Mutex<Option<(String, Environment)>> = Mutex::new(None);

/// The process-wide environment, loading the library on first use. A failed load is not
/// remembered, so a corrected path works in the same process.
pub fn environment(library: &str) -> Result<Environment> {
    let mut guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = guard.as_ref() {
        if loaded != library {
            return Err(ClipError::new(
                ErrorKind::Runtime,
                format!("ONNX Runtime was already loaded from \"{loaded}\" in this process"),
            )
            .hint("A new pg_clip.onnxruntime_library takes effect in new sessions (reconnect)."));
        }
        return Ok(env.clone());
    }
    if !Path::new(library).is_file() {
        return Err(ClipError::runtime(library, "no such file"));
    }
    let env = with_signals_blocked(|| {
        ort::init_from(library)
            .map_err(|e| ClipError::runtime(library, e))?
            .with_name("pg_clip")
            .build()
            .map_err(|e| ClipError::runtime(library, e))
    })?;
    *guard = Some((library.to_string(), env.clone()));
    Ok(env)
}

/// Run `f` with every signal blocked in the calling thread, so that threads it starts (ONNX
/// Runtime's intra-op pool) inherit a full mask and never run the host's signal handlers:
/// a Postgres backend expects its handlers on its main thread only.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain libc calls on a stack-allocated sigset_t; the old mask is restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

/// CPU threads for decoding images and for k-means' assignment step, started once per process
/// with all signals blocked (the backend's main thread keeps handling them).
pub fn decode_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        with_signals_blocked(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("pg_clip-decode-{i}"))
                .build()
                .expect("cannot start decoding threads")
        })
    })
}

/// The text graph's inputs: the ids alone (open_clip, immich), or ids and attention mask
/// (M-CLIP's `input_ids`, `attention_mask`); int32 or int64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TextInputs {
    i64: bool,
    mask: bool,
}

/// A loaded model: both sessions and the tokenizer.
pub struct ClipModel {
    pub folder: ModelFolder,
    pub device_used: Device,
    /// The graphs' fixed batch sizes (dimension 0), None where it is symbolic. Since 2025
    /// immich exports with a batch of 1; those run one item per call.
    pub image_batch: Option<usize>,
    pub text_batch: Option<usize>,
    visual: Session,
    textual: Session,
    tokenizer: ClipTokenizer,
    text_inputs: TextInputs,
}

impl ClipModel {
    pub fn load(env: &Environment, folder: ModelFolder, opts: &SessionOptions) -> Result<Self> {
        let shown = folder.path.display().to_string();
        let cuda = match opts.device {
            Device::Cpu => false,
            Device::Cuda => true,
            Device::Auto => ep::CUDA::is_available().unwrap_or(false),
        };
        let (visual, textual, device_used) = match (build_pair(env, &folder, opts, cuda), opts.device) {
            (Ok((v, t)), _) => (v, t, if cuda { Device::Cuda } else { Device::Cpu }),
            (Err(e), Device::Auto) if cuda && e.kind == ErrorKind::DeviceUnavailable => {
                let (v, t) = build_pair(env, &folder, opts, false)?;
                (v, t, Device::Cpu)
            }
            (Err(e), _) => return Err(e),
        };
        let tokenizer = ClipTokenizer::from_file(
            &folder.path.join("textual/tokenizer.json"),
            folder.context_length,
            folder.pad_token.as_deref(),
            folder.text_clean,
            folder.options.language.as_deref(),
        )
        .map_err(|e| ClipError::model(&shown, format!("textual/tokenizer.json: {e}")))?;
        let image_batch = check_visual(&visual, &folder)
            .map_err(|m| ClipError::model(&shown, format!("visual/model.onnx: {m}")))?;
        let (text_inputs, text_batch) = check_textual(&textual, &folder)
            .map_err(|m| ClipError::model(&shown, format!("textual/model.onnx: {m}")))?;
        Ok(ClipModel {
            folder,
            device_used,
            image_batch,
            text_batch,
            visual,
            textual,
            tokenizer,
            text_inputs,
        })
    }

    /// What kind of model this is, from its graphs, tokenizer and config.
    pub fn family(&self) -> Family {
        if self.text_inputs.mask {
            Family::Mclip
        } else if self.tokenizer.has_token("eng_Latn") {
            Family::Nllb
        } else if self.folder.sigmoid_trained {
            Family::Siglip
        } else {
            Family::Clip
        }
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Run the visual model on ready tensors (`n` images, NCHW, row-major), L2-normalised rows;
    /// in calls of the graph's fixed batch size where it has one, `interrupt` polled between
    /// them. An error here is the model's (shape, ONNX Runtime), never one image's.
    pub fn run_visual(&mut self, tensor: &[f32], n: usize, interrupt: Interrupt) -> Result<Vec<Vec<f32>>> {
        let s = self.folder.preprocess.size as usize;
        let per = 3 * s * s;
        let mut out = Vec::with_capacity(n);
        for (part, rows_in) in fixed_chunks(n, self.image_batch) {
            if interrupt.is_set() {
                return Err(ClipError::cancelled());
            }
            let data = padded(&tensor[part.start * per..part.end * per], rows_in * per);
            let input = TensorRef::from_array_view(([rows_in, 3, s, s], &*data))
                .map_err(|e| ClipError::inference("visual", e))?;
            let outputs =
                self.visual.run(ort::inputs![input]).map_err(|e| ClipError::inference("visual", e))?;
            let mut r = rows(&outputs[0], rows_in, self.folder.embed_dim, "visual")?;
            r.truncate(part.len());
            out.extend(r);
        }
        Ok(out)
    }

    /// Run the text model on a padded batch (`n` rows of context_length), in calls of the
    /// graph's fixed batch size where it has one, `interrupt` polled between them.
    pub fn run_textual(
        &mut self,
        batch: &TokenBatch,
        n: usize,
        interrupt: Interrupt,
    ) -> Result<Vec<Vec<f32>>> {
        let (ctx, dim) = (self.tokenizer.context_length(), self.folder.embed_dim);
        let mut out = Vec::with_capacity(n);
        for (part, rows_in) in fixed_chunks(n, self.text_batch) {
            if interrupt.is_set() {
                return Err(ClipError::cancelled());
            }
            let ids = padded(&batch.ids[part.start * ctx..part.end * ctx], rows_in * ctx);
            let mask = padded(&batch.attention_mask[part.start * ctx..part.end * ctx], rows_in * ctx);
            let outputs = if self.text_inputs.i64 {
                self.run_text_inputs([rows_in, ctx], &ids, &mask)
            } else {
                let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
                let mask32: Vec<i32> = mask.iter().map(|&i| i as i32).collect();
                self.run_text_inputs([rows_in, ctx], &ids32, &mask32)
            }?;
            let mut r = rows(&outputs[0], rows_in, dim, "text")?;
            r.truncate(part.len());
            out.extend(r);
        }
        Ok(out)
    }

    fn run_text_inputs<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
        &mut self,
        shape: [usize; 2],
        ids: &[T],
        mask: &[T],
    ) -> Result<ort::session::SessionOutputs<'_>> {
        let ids = TensorRef::from_array_view((shape, ids)).map_err(|e| ClipError::inference("text", e))?;
        if self.text_inputs.mask {
            let mask =
                TensorRef::from_array_view((shape, mask)).map_err(|e| ClipError::inference("text", e))?;
            self.textual.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
        } else {
            self.textual.run(ort::inputs![ids])
        }
        .map_err(|e| ClipError::inference("text", e))
    }

    /// Embed image files' bytes: decoded in parallel, one model call per `batch_size` images.
    /// Each image succeeds or fails on its own, so bulk callers can skip bad images; a failure
    /// of the model itself is the outer error, for no image is to blame for it.
    pub fn embed_images(
        &mut self,
        images: &[&[u8]],
        batch_size: usize,
        limits: &preprocess::ImageLimits,
        interrupt: Interrupt,
    ) -> Result<Vec<Result<Vec<f32>>>> {
        let all = self.embed_images_with_thumbnails(images, batch_size, limits, interrupt, None)?;
        Ok(all.into_iter().map(|r| r.map(|e| e.vector)).collect())
    }

    /// As [`ClipModel::embed_images`], with a thumbnail of `thumbnail` pixels made from each
    /// image's decode.
    pub fn embed_images_with_thumbnails(
        &mut self,
        images: &[&[u8]],
        batch_size: usize,
        limits: &preprocess::ImageLimits,
        interrupt: Interrupt,
        thumbnail: Option<u32>,
    ) -> Result<Vec<Result<Embedded>>> {
        let cfg = self.folder.preprocess.clone();
        let mut results: Vec<Result<Embedded>> = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch_limit(batch_size, &cfg, limits)) {
            if interrupt.is_set() {
                results.extend(chunk.iter().map(|_| Err(ClipError::cancelled())));
                continue;
            }
            let (tensor, decoded) = preprocess_batch(chunk, &cfg, limits, interrupt, thumbnail);
            let good = decoded.iter().filter(|r| r.is_ok()).count();
            let embedded = if good > 0 { self.run_visual(&tensor, good, interrupt)? } else { Vec::new() };
            results.extend(pair(decoded, embedded));
        }
        Ok(results)
    }

    pub fn embed_texts(
        &mut self,
        texts: &[&str],
        batch_size: usize,
        interrupt: Interrupt,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size.max(1)) {
            let batch = self.tokenizer.encode_batch(chunk)?;
            out.extend(self.run_textual(&batch, chunk.len(), interrupt)?);
        }
        Ok(out)
    }
}

/// The largest `pg_clip.batch_size`: a chunk of texts this long, each at the tokenizer's
/// length limit, still fits one message to the inference service.
pub const MAX_BATCH_SIZE: usize = 4096;

/// The most images of one batch: `batch_size`, within the image byte limit for the batch
/// tensor (at least one image).
pub fn batch_limit(
    batch_size: usize,
    cfg: &preprocess::PreprocessConfig,
    limits: &preprocess::ImageLimits,
) -> usize {
    let bytes = cfg.tensor_len() as u64 * 4;
    batch_size.clamp(1, (limits.max_bytes / bytes).max(1) as usize)
}

/// An image's embedding, and its thumbnail when one was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vector: Vec<f32>,
    pub thumbnail: Option<Vec<u8>>,
}

/// Each image's decoding outcome with its embedding: the model's rows are those of the images
/// that decoded, in order.
pub fn pair(decoded: Vec<Result<Option<Vec<u8>>>>, rows: Vec<Vec<f32>>) -> Vec<Result<Embedded>> {
    let mut rows = rows.into_iter();
    decoded
        .into_iter()
        .map(|r| {
            r.map(|thumbnail| Embedded {
                vector: rows.next().expect("one embedding per decoded image"),
                thumbnail,
            })
        })
        .collect()
}

/// Decode and preprocess `images` in parallel (the decoding threads share one budget of
/// `limits.max_bytes`): one tensor of the images that succeeded, in order, and each image's
/// outcome (with its thumbnail of `thumbnail` pixels, when asked). The model runs elsewhere:
/// here (embed_images) or in the inference service.
pub fn preprocess_batch(
    images: &[&[u8]],
    cfg: &preprocess::PreprocessConfig,
    limits: &preprocess::ImageLimits,
    interrupt: Interrupt,
    thumbnail: Option<u32>,
) -> (Vec<f32>, Vec<Result<Option<Vec<u8>>>>) {
    let len = cfg.tensor_len();
    let mut tensor = Vec::new();
    if tensor.try_reserve_exact(images.len() * len).is_err() {
        return (
            Vec::new(),
            images.iter().map(|_| Err(ClipError::out_of_memory("the batch tensor"))).collect(),
        );
    }
    tensor.resize(images.len() * len, 0f32);
    let budget = preprocess::Budget::new(limits.max_bytes);
    let decoded: Vec<Result<Option<Vec<u8>>>> = decode_pool().install(|| {
        tensor
            .par_chunks_mut(len)
            .zip(images.par_iter())
            .map(|(out, bytes)| {
                if interrupt.is_set() {
                    return Err(ClipError::cancelled());
                }
                preprocess::preprocess_with_thumbnail(bytes, cfg, limits, Some(&budget), out, thumbnail)
            })
            .collect()
    });
    let mut good = 0;
    for (i, r) in decoded.iter().enumerate() {
        if r.is_ok() {
            if i != good {
                tensor.copy_within(i * len..(i + 1) * len, good * len);
            }
            good += 1;
        }
    }
    tensor.truncate(good * len);
    (tensor, decoded)
}

/// `n` rows in calls of `fixed` rows (each call's range, and the rows the graph gets: the last
/// call is padded up to `fixed`), or in one call when the batch is symbolic.
fn fixed_chunks(n: usize, fixed: Option<usize>) -> Vec<(std::ops::Range<usize>, usize)> {
    match fixed {
        None => vec![(0..n, n)],
        Some(b) => (0..n).step_by(b).map(|start| (start..(start + b).min(n), b)).collect(),
    }
}

/// `data` as `len` values, zero-padded at the end (borrowed when it is already that long).
fn padded<T: Copy + Default>(data: &[T], len: usize) -> std::borrow::Cow<'_, [T]> {
    if data.len() == len {
        std::borrow::Cow::Borrowed(data)
    } else {
        let mut v = data.to_vec();
        v.resize(len, T::default());
        std::borrow::Cow::Owned(v)
    }
}

fn build_pair(
    env: &Environment,
    folder: &ModelFolder,
    opts: &SessionOptions,
    cuda: bool,
) -> Result<(Session, Session)> {
    Ok((
        build_session(env, folder, "visual/model.onnx", opts, cuda)?,
        build_session(env, folder, "textual/model.onnx", opts, cuda)?,
    ))
}

fn build_session(
    env: &Environment,
    folder: &ModelFolder,
    file: &str,
    opts: &SessionOptions,
    cuda: bool,
) -> Result<Session> {
    let shown = folder.path.display().to_string();
    let path = folder.path.join(file);
    with_signals_blocked(|| {
        let mut b = Session::builder(env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
            .map_err(|e| ClipError::model(&shown, format!("{file}: {e}")))?;
        if opts.intra_op_threads > 0 {
            b = b
                .with_intra_threads(opts.intra_op_threads)
                .map_err(|e| ClipError::model(&shown, format!("{file}: {e}")))?;
        }
        if cuda {
            b = b.with_execution_providers([ep::CUDA::default().build().error_on_failure()]).map_err(|e| {
                ClipError::new(ErrorKind::DeviceUnavailable, format!("the CUDA execution provider could not start: {e}"))
                    .hint("Use the CUDA build of ONNX Runtime (onnxruntime-gpu) on a machine with an NVIDIA GPU, or set pg_clip.device = 'cpu'.")
            })?;
        }
        b.commit_from_file(&path)
            .map_err(|e| ClipError::model(&shown, format!("{file} is not a loadable ONNX model: {e}")))
    })
}

/// Shape check: one float input [N, 3, size, size], an output [N, embed_dim]; N's fixed size
/// where it has one.
fn check_visual(s: &Session, folder: &ModelFolder) -> std::result::Result<Option<usize>, String> {
    let size = folder.preprocess.size as i64;
    let input = match s.inputs() {
        [one] => one,
        many => return Err(format!("has {} inputs, expected 1", many.len())),
    };
    let batch = match input.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
            if shape.len() == 4
                && dim_ok(shape[1], 3)
                && dim_ok(shape[2], size)
                && dim_ok(shape[3], size) =>
        {
            batch_dim(shape[0], input.name())?
        }
        other => {
            return Err(format!(
                "input \"{}\" is {other}, expected float32 [N, 3, {size}, {size}]",
                input.name()
            ))
        }
    };
    check_output(s, folder.embed_dim, batch)?;
    Ok(batch)
}

/// Integer ids [N, context_length] (alone, or `input_ids` with `attention_mask`) and an
/// output [N, embed_dim].
fn check_textual(
    s: &Session,
    folder: &ModelFolder,
) -> std::result::Result<(TextInputs, Option<usize>), String> {
    let ctx = folder.context_length as i64;
    let inputs = s.inputs();
    let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
    let mask = match names.as_slice() {
        [_] => false,
        [a, b]
            if (*a, *b) == ("input_ids", "attention_mask") || (*a, *b) == ("attention_mask", "input_ids") =>
        {
            true
        }
        _ => {
            return Err(format!(
                "has inputs {names:?}, expected one (the ids) or input_ids and attention_mask"
            ))
        }
    };
    let mut seen = None;
    for input in inputs {
        let found = match input.dtype() {
            ValueType::Tensor { ty, shape, .. } if shape.len() == 2 && dim_ok(shape[1], ctx) => match ty {
                TensorElementType::Int32 => (false, batch_dim(shape[0], input.name())?),
                TensorElementType::Int64 => (true, batch_dim(shape[0], input.name())?),
                _ => {
                    return Err(format!(
                        "input \"{}\" is {}, expected int32 or int64 ids",
                        input.name(),
                        input.dtype()
                    ))
                }
            },
            other => return Err(format!("input \"{}\" is {other}, expected int32 [N, {ctx}]", input.name())),
        };
        if seen.is_some_and(|s| s != found) {
            return Err(format!("inputs {names:?} differ in type or batch size"));
        }
        seen = Some(found);
    }
    let (i64, batch) = seen.expect("one input at least");
    check_output(s, folder.embed_dim, batch)?;
    Ok((TextInputs { i64, mask }, batch))
}

/// Dimension 0: symbolic (None) or a fixed positive size.
fn batch_dim(d: i64, name: &str) -> std::result::Result<Option<usize>, String> {
    match d {
        -1 => Ok(None),
        n if n > 0 => Ok(Some(n as usize)),
        n => Err(format!("input \"{name}\" has batch dimension {n}")),
    }
}

fn check_output(s: &Session, dim: usize, batch: Option<usize>) -> std::result::Result<(), String> {
    let out = s.outputs().first().ok_or("has no outputs")?;
    match out.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
            if shape.len() == 2
                && dim_ok(shape[1], dim as i64)
                && (shape[0] == -1 || Some(shape[0] as usize) == batch) =>
        {
            Ok(())
        }
        other => Err(format!(
            "output \"{}\" is {other}, expected float32 [{}, {dim}] (embed_dim in config.json)",
            out.name(),
            batch.map_or("N".into(), |b| b.to_string())
        )),
    }
}

fn dim_ok(have: i64, want: i64) -> bool {
    have == -1 || have == want
}

fn rows(value: &ort::value::DynValue, n: usize, dim: usize, what: &str) -> Result<Vec<Vec<f32>>> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| ClipError::inference(what, e))?;
    if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != dim {
        return Err(ClipError::inference(what, format!("output shape {shape:?}, expected [{n}, {dim}]")));
    }
    Ok(data.chunks_exact(dim).map(l2_normalised).collect())
}

pub fn l2_normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
    } else {
        v.to_vec()
    }
}
