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
use crate::model::ModelFolder;
use crate::preprocess;
use crate::tokenize::ClipTokenizer;
use crate::Interrupt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A loaded model: both sessions and the tokenizer.
pub struct ClipModel {
    pub folder: ModelFolder,
    pub device_used: Device,
    visual: Session,
    textual: Session,
    tokenizer: ClipTokenizer,
    text_input_i64: bool,
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
        )
        .map_err(|e| ClipError::model(&shown, format!("textual/tokenizer.json: {e}")))?;
        check_visual(&visual, &folder)
            .map_err(|m| ClipError::model(&shown, format!("visual/model.onnx: {m}")))?;
        let text_input_i64 = check_textual(&textual, &folder)
            .map_err(|m| ClipError::model(&shown, format!("textual/model.onnx: {m}")))?;
        Ok(ClipModel { folder, device_used, visual, textual, tokenizer, text_input_i64 })
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Run the visual model on ready tensors (`n` images, NCHW, row-major), L2-normalised rows.
    pub fn run_visual(&mut self, tensor: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let s = self.folder.preprocess.size as usize;
        let input = TensorRef::from_array_view(([n, 3, s, s], tensor))
            .map_err(|e| ClipError::inference("visual", e))?;
        let outputs = self.visual.run(ort::inputs![input]).map_err(|e| ClipError::inference("visual", e))?;
        rows(&outputs[0], n, self.folder.embed_dim, "visual")
    }

    /// Run the text model on padded ids (`n` rows of context_length).
    pub fn run_textual(&mut self, ids: &[i64], n: usize) -> Result<Vec<Vec<f32>>> {
        let ctx = self.tokenizer.context_length();
        let outputs = if self.text_input_i64 {
            let input =
                TensorRef::from_array_view(([n, ctx], ids)).map_err(|e| ClipError::inference("text", e))?;
            self.textual.run(ort::inputs![input])
        } else {
            let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
            let input = TensorRef::from_array_view(([n, ctx], ids32.as_slice()))
                .map_err(|e| ClipError::inference("text", e))?;
            self.textual.run(ort::inputs![input])
        }
        .map_err(|e| ClipError::inference("text", e))?;
        rows(&outputs[0], n, self.folder.embed_dim, "text")
    }

    /// Embed image files' bytes: decoded in parallel, one model call per `batch_size` images.
    /// Each element succeeds or fails on its own, so bulk callers can skip bad images.
    pub fn embed_images(
        &mut self,
        images: &[&[u8]],
        batch_size: usize,
        limits: &preprocess::ImageLimits,
        interrupt: Interrupt,
    ) -> Vec<Result<Vec<f32>>> {
        let cfg = self.folder.preprocess.clone();
        let len = cfg.tensor_len();
        // the batch tensor stays within the image byte limit too (at least one image)
        let batch = batch_size.clamp(1, (limits.max_bytes / (len as u64 * 4)).max(1) as usize);
        let mut results: Vec<Result<Vec<f32>>> = Vec::with_capacity(images.len());
        let tensor_len = batch.min(images.len().max(1)) * len;
        let mut tensor = Vec::new();
        if tensor.try_reserve_exact(tensor_len).is_err() {
            return images.iter().map(|_| Err(ClipError::out_of_memory("the batch tensor"))).collect();
        }
        tensor.resize(tensor_len, 0f32);
        // the decoding threads share one byte budget: together they hold at most max_bytes
        let budget = preprocess::Budget::new(limits.max_bytes);
        for chunk in images.chunks(batch) {
            if interrupt.is_set() {
                results.extend(chunk.iter().map(|_| Err(ClipError::cancelled())));
                continue;
            }
            let decoded: Vec<Result<()>> = decode_pool().install(|| {
                tensor[..chunk.len() * len]
                    .par_chunks_mut(len)
                    .zip(chunk.par_iter())
                    .map(|(out, bytes)| {
                        if interrupt.is_set() {
                            return Err(ClipError::cancelled());
                        }
                        preprocess::preprocess_into(bytes, &cfg, limits, Some(&budget), out)
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
            let mut embedded = if good > 0 {
                match self.run_visual(&tensor[..good * len], good) {
                    Ok(e) => e.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e); good],
                }
            } else {
                Vec::new()
            }
            .into_iter();
            for r in decoded {
                results.push(match r {
                    Ok(()) => embedded.next().expect("one embedding per decoded image"),
                    Err(e) => Err(e),
                });
            }
        }
        results
    }

    pub fn embed_texts(&mut self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size.max(1)) {
            let ids = self.tokenizer.encode_batch(chunk)?;
            out.extend(self.run_textual(&ids, chunk.len())?);
        }
        Ok(out)
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

/// Shape check: one float input [N, 3, size, size], an output [N, embed_dim].
fn check_visual(s: &Session, folder: &ModelFolder) -> std::result::Result<(), String> {
    let size = folder.preprocess.size as i64;
    let input = single_input(s)?;
    match input.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
            if shape.len() == 4
                && dim_ok(shape[1], 3)
                && dim_ok(shape[2], size)
                && dim_ok(shape[3], size) => {}
        other => {
            return Err(format!(
                "input \"{}\" is {other}, expected float32 [N, 3, {size}, {size}]",
                input.name()
            ))
        }
    }
    check_output(s, folder.embed_dim)
}

/// One integer input [N, context_length] and an output [N, embed_dim]; true when it is int64.
fn check_textual(s: &Session, folder: &ModelFolder) -> std::result::Result<bool, String> {
    let ctx = folder.context_length as i64;
    let input = single_input(s)?;
    let i64_input = match input.dtype() {
        ValueType::Tensor { ty, shape, .. } if shape.len() == 2 && dim_ok(shape[1], ctx) => match ty {
            TensorElementType::Int32 => false,
            TensorElementType::Int64 => true,
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
    check_output(s, folder.embed_dim)?;
    Ok(i64_input)
}

fn single_input(s: &Session) -> std::result::Result<&ort::value::Outlet, String> {
    match s.inputs() {
        [one] => Ok(one),
        many => Err(format!("has {} inputs, expected 1", many.len())),
    }
}

fn check_output(s: &Session, dim: usize) -> std::result::Result<(), String> {
    let out = s.outputs().first().ok_or("has no outputs")?;
    match out.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
            if shape.len() == 2 && dim_ok(shape[1], dim as i64) =>
        {
            Ok(())
        }
        other => Err(format!(
            "output \"{}\" is {other}, expected float32 [N, {dim}] (embed_dim in config.json)",
            out.name()
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
