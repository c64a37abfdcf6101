//! Every user-facing failure of the core, with the message and the hint a user acts on.
//! The SQL layer maps [`ErrorKind`] to a SQLSTATE; nothing here knows Postgres.

use std::fmt;

use crate::model::ModelOptions;

/// The class of a failure, which decides the SQLSTATE at the SQL edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image bytes are wrong: empty, corrupt, unknown or unsupported format.
    InvalidImage,
    /// The image is valid but larger than `pg_clip.max_image_pixels`.
    ImageTooLarge,
    /// The model folder is missing files or its files disagree.
    InvalidModel,
    /// The ONNX Runtime library cannot be loaded or initialised.
    Runtime,
    /// The requested device (CUDA) is not available.
    DeviceUnavailable,
    /// Inference itself failed.
    Inference,
    /// Text could not be tokenised.
    InvalidText,
    /// An image path points outside pg_clip.image_root.
    PathNotAllowed,
    /// An image file is missing or unreadable.
    FileUnreadable,
    /// A large buffer could not be allocated.
    OutOfMemory,
    /// The caller asked to stop (the SQL layer raises its own cancel then).
    Cancelled,
    /// The shared inference service is not running, is stopping, or the connection broke.
    ServiceUnavailable,
    /// A model's files no longer have the stamp they were registered with.
    ModelChanged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipError {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, ClipError>;

impl ClipError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ClipError { kind, message: message.into(), detail: None, hint: None }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    /// Prefix the message with where it happened ("element 3", "row 17"), keeping kind and hint.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }

    pub fn empty_image() -> Self {
        Self::new(ErrorKind::InvalidImage, "image is empty (0 bytes)")
            .hint("Check that the column holds the image bytes, not a path or an empty value.")
    }

    pub fn unknown_format(head: &[u8]) -> Self {
        let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self::new(ErrorKind::InvalidImage, "image data is not in a recognised format")
            .detail(format!("first bytes: {}", shown.join(" ")))
            .hint(SUPPORTED_HINT)
    }

    pub fn unsupported_format(format: &str) -> Self {
        Self::new(ErrorKind::InvalidImage, format!("image format {format} is not supported"))
            .hint(SUPPORTED_HINT)
    }

    pub fn decode(format: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidImage, format!("could not decode {format} image: {reason}"))
            .hint("The file may be truncated or corrupt; re-export or re-upload it.")
    }

    pub fn too_many_pixels(width: u32, height: u32, max: u64) -> Self {
        Self::new(
            ErrorKind::ImageTooLarge,
            format!(
                "image of {width}x{height} = {} pixels exceeds pg_clip.max_image_pixels ({max})",
                u64::from(width) * u64::from(height)
            ),
        )
        .hint("Downscale the image, or raise pg_clip.max_image_pixels if it is trusted.")
    }

    pub fn too_many_bytes(width: u32, height: u32, bytes: u64, max: u64) -> Self {
        Self::new(
            ErrorKind::ImageTooLarge,
            format!(
                "image of {width}x{height} needs {} MB to preprocess, over pg_clip.max_image_memory ({} MB)",
                mb(bytes),
                mb(max)
            ),
        )
        .hint("Downscale the image, or have a superuser raise pg_clip.max_image_memory if it is trusted.")
    }

    pub fn extreme_aspect(width: u32, height: u32, size: u32, new_long: f64, max: u64) -> Self {
        Self::new(
            ErrorKind::ImageTooLarge,
            format!(
                "image of {width}x{height} has an extreme aspect ratio: resized to {size} pixels on its short side it \
                 would be {new_long:.0} pixels long, over pg_clip.max_image_memory ({} MB)",
                mb(max)
            ),
        )
        .hint("Crop the image to a less extreme shape first.")
    }

    pub fn out_of_memory(what: &str) -> Self {
        Self::new(ErrorKind::OutOfMemory, format!("out of memory allocating {what}"))
    }

    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "cancelled")
    }

    pub fn model(folder: &str, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidModel, format!("model folder \"{folder}\": {message}")).hint(
            "A model folder holds config.json, visual/{model.onnx,preprocess_cfg.json} and \
             textual/{model.onnx,tokenizer.json,tokenizer_config.json}, as open_clip and immich export them.",
        )
    }

    pub fn runtime(library: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Runtime, format!("could not load the ONNX Runtime library \"{library}\": {reason}"))
            .hint("Set pg_clip.onnxruntime_library to the path of libonnxruntime.so (1.32 or newer), readable by the server.")
    }

    /// `name`'s files in `folder` hash to `now`, not to the `registered` stamp.
    pub fn model_changed(
        name: &str,
        folder: &str,
        registered: &str,
        now: &str,
        options: &ModelOptions,
    ) -> Self {
        let options = if *options == ModelOptions::default() {
            String::new()
        } else {
            format!(", '{}'", serde_json::to_string(options).expect("options serialise"))
        };
        Self::new(
            ErrorKind::ModelChanged,
            format!("the files of model \"{name}\" changed since it was registered"),
        )
        .detail(format!("registered stamp {registered}, files now {now}"))
        .hint(format!(
            "Run SELECT clip.register_model('{name}', '{folder}'{options}) to accept the new files; \
                 embeddings made with the old files are then stale."
        ))
    }

    pub fn inference(what: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Inference, format!("{what} model failed: {reason}"))
    }
}

fn mb(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

const SUPPORTED_HINT: &str = "Supported formats: JPEG, PNG, WebP, GIF (first frame), BMP, TIFF.";

impl fmt::Display for ClipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ClipError {}
