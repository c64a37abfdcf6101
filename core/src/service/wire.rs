//! The service's wire format: length-prefixed frames of a request or a reply, tagged with the
//! request's id.
//!
//! Written by hand rather than with a serialisation crate: there are five messages, and the
//! one that matters for speed is a header followed by raw little-endian f32 rows (a batch of
//! image tensors, 150 KB per image at 224 px), which is copied as one block here instead of
//! being encoded element by element.

use crate::error::{ClipError, ErrorKind};
use crate::runtime::Device;

/// A frame larger than this is refused (a bulk chunk of 64 images at 336 px is 87 MB).
pub const MAX_FRAME: usize = 256 << 20;

// A chunk of the longest texts (the client checks each text's length before sending; UTF-8
// has at most 4 bytes a character) fits one frame.
const _: () = assert!(
    crate::runtime::MAX_BATCH_SIZE * (crate::tokenize::MAX_TEXT_CHARS * 4 + 4) + (1 << 20) < MAX_FRAME
);

/// The most images of `cfg`'s size one request carries within [`MAX_FRAME`] (1 MB is left
/// for the rest of the message: the model's name, folder, stamp and options).
pub fn images_per_request(cfg: &crate::preprocess::PreprocessConfig) -> usize {
    ((MAX_FRAME - (1 << 20)) / (cfg.tensor_len() * 4)).max(1)
}

/// The socket's file name in the data directory. Relative on purpose: every server process
/// runs in the data directory, and a Unix socket's path may not be longer than 107 bytes.
pub const SOCKET_NAME: &str = "pg_clip_inference.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tower {
    Visual,
    Text,
}

/// Interactive requests (one image or text: an identify from an application) are batched
/// ahead of bulk ones (a refresh's chunks, arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Interactive,
    Bulk,
}

/// Which model, exactly as registered: the service loads one set of sessions per spec, and
/// refuses a folder whose files no longer have the registered stamp. The device and the
/// threads are the service's own settings, not the caller's: a session's SET cannot make the
/// service load more copies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    pub name: String,
    pub folder: String,
    pub stamp: String,
    /// the registration's options (clip.model.options), as JSON
    pub options: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `n` preprocessed images, NCHW, row-major
    Images {
        n: usize,
        tensor: Vec<f32>,
    },
    Texts(Vec<String>),
}

impl Input {
    pub fn len(&self) -> usize {
        match self {
            Input::Images { n, .. } => *n,
            Input::Texts(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tower(&self) -> Tower {
        match self {
            Input::Images { .. } => Tower::Visual,
            Input::Texts(_) => Tower::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Embed {
        model: ModelSpec,
        priority: Priority,
        input: Input,
    },
    /// Load the model (if it is not loaded) and describe it: what registration records.
    Describe {
        model: ModelSpec,
    },
    /// Drop request `id` if it is still queued (the caller gave up waiting).
    Cancel {
        id: u64,
    },
    Status,
}

/// What the service knows about a loaded model that registration records.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub family: String,
    pub device_used: Device,
    pub image_batch: Option<usize>,
    pub text_batch: Option<usize>,
}

impl ModelInfo {
    pub fn of(model: &crate::runtime::ClipModel) -> Self {
        ModelInfo {
            family: model.family().as_str().to_string(),
            device_used: model.device_used,
            image_batch: model.image_batch,
            text_batch: model.text_batch,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// one L2-normalised row per input item
    Vectors(Vec<Vec<f32>>),
    Failed(ClipError),
    Model(ModelInfo),
    /// the service's state as a JSON document (clip.inference_status)
    Status(String),
}

/// Every error kind, in wire order (a kind's code is its index).
const KINDS: [ErrorKind; 13] = [
    ErrorKind::InvalidImage,
    ErrorKind::ImageTooLarge,
    ErrorKind::InvalidModel,
    ErrorKind::Runtime,
    ErrorKind::DeviceUnavailable,
    ErrorKind::Inference,
    ErrorKind::InvalidText,
    ErrorKind::PathNotAllowed,
    ErrorKind::FileUnreadable,
    ErrorKind::OutOfMemory,
    ErrorKind::Cancelled,
    ErrorKind::ServiceUnavailable,
    ErrorKind::ModelChanged,
];

const DEVICES: [Device; 3] = [Device::Cpu, Device::Cuda, Device::Auto];

fn code_of<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|k| k == v).expect("every value is listed") as u8
}

fn of_code<T: Copy>(all: &[T], c: u8, what: &str) -> Result<T, String> {
    all.get(c as usize).copied().ok_or_else(|| format!("unknown {what} {c}"))
}

struct Enc(Vec<u8>);

impl Enc {
    fn new(id: u64, tag: u8) -> Self {
        let mut e = Enc(Vec::with_capacity(64));
        e.0.extend_from_slice(&[0; 4]); // the length, set by done()
        e.u64(id);
        e.u8(tag);
        e
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: usize) {
        self.0.extend_from_slice(&u32::try_from(v).expect("fits in a frame").to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        self.u8(s.is_some() as u8);
        if let Some(s) = s {
            self.str(s);
        }
    }
    fn opt_u32(&mut self, v: Option<usize>) {
        self.u32(v.map_or(0, |v| v + 1));
    }
    fn f32s(&mut self, v: &[f32]) {
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn done(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len() - 4).expect("fits in a frame");
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

struct Dec<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.p.checked_add(n).filter(|&e| e <= self.b.len()).ok_or("truncated message")?;
        let s = &self.b[self.p..end];
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }
    fn opt_str(&mut self) -> Result<Option<String>, String> {
        Ok(if self.u8()? != 0 { Some(self.str()?) } else { None })
    }
    fn opt_u32(&mut self) -> Result<Option<usize>, String> {
        Ok(self.u32()?.checked_sub(1))
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, String> {
        let bytes = self.take(n.checked_mul(4).ok_or("too many values")?)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }
    fn end(&self) -> Result<(), String> {
        if self.p == self.b.len() {
            Ok(())
        } else {
            Err("trailing bytes after a message".into())
        }
    }
}

fn spec(e: &mut Enc, m: &ModelSpec) {
    e.str(&m.name);
    e.str(&m.folder);
    e.str(&m.stamp);
    e.str(&m.options);
}

fn read_spec(d: &mut Dec) -> Result<ModelSpec, String> {
    Ok(ModelSpec { name: d.str()?, folder: d.str()?, stamp: d.str()?, options: d.str()? })
}

/// A request as a frame (length prefix included).
pub fn encode_request(id: u64, r: &Request) -> Vec<u8> {
    match r {
        Request::Embed { model, priority, input } => {
            let mut e = Enc::new(id, 0);
            spec(&mut e, model);
            e.u8(matches!(priority, Priority::Bulk) as u8);
            match input {
                Input::Images { n, tensor } => {
                    e.u8(0);
                    e.u32(*n);
                    e.u32(tensor.len());
                    e.f32s(tensor);
                }
                Input::Texts(texts) => {
                    e.u8(1);
                    e.u32(texts.len());
                    for t in texts {
                        e.str(t);
                    }
                }
            }
            e.done()
        }
        Request::Describe { model } => {
            let mut e = Enc::new(id, 1);
            spec(&mut e, model);
            e.done()
        }
        Request::Cancel { id: which } => {
            let mut e = Enc::new(id, 2);
            e.u64(*which);
            e.done()
        }
        Request::Status => Enc::new(id, 3).done(),
    }
}

/// A request from a frame's body (without its length prefix).
pub fn decode_request(frame: &[u8]) -> Result<(u64, Request), String> {
    let mut d = Dec { b: frame, p: 0 };
    let id = d.u64()?;
    let r = match d.u8()? {
        0 => {
            let model = read_spec(&mut d)?;
            let priority = if d.u8()? == 0 { Priority::Interactive } else { Priority::Bulk };
            let input = match d.u8()? {
                0 => {
                    let n = d.u32()?;
                    let len = d.u32()?;
                    if n == 0 || len % n != 0 {
                        return Err(format!("{len} values do not make {n} images"));
                    }
                    Input::Images { n, tensor: d.f32s(len)? }
                }
                1 => {
                    let n = d.u32()?;
                    let mut texts = Vec::with_capacity(n.min(frame.len() / 4));
                    for _ in 0..n {
                        texts.push(d.str()?);
                    }
                    Input::Texts(texts)
                }
                t => return Err(format!("unknown input kind {t}")),
            };
            Request::Embed { model, priority, input }
        }
        1 => Request::Describe { model: read_spec(&mut d)? },
        2 => Request::Cancel { id: d.u64()? },
        3 => Request::Status,
        t => return Err(format!("unknown request {t}")),
    };
    d.end()?;
    Ok((id, r))
}

pub fn encode_reply(id: u64, r: &Reply) -> Vec<u8> {
    match r {
        Reply::Vectors(rows) => {
            let mut e = Enc::new(id, 0);
            let dim = rows.first().map_or(0, Vec::len);
            e.u32(rows.len());
            e.u32(dim);
            for row in rows {
                assert_eq!(row.len(), dim, "rows of one reply have one length");
                e.f32s(row);
            }
            e.done()
        }
        Reply::Failed(err) => {
            let mut e = Enc::new(id, 1);
            e.u8(code_of(&KINDS, &err.kind));
            e.str(&err.message);
            e.opt_str(err.detail.as_deref());
            e.opt_str(err.hint.as_deref());
            e.done()
        }
        Reply::Model(m) => {
            let mut e = Enc::new(id, 2);
            e.str(&m.family);
            e.u8(code_of(&DEVICES, &m.device_used));
            e.opt_u32(m.image_batch);
            e.opt_u32(m.text_batch);
            e.done()
        }
        Reply::Status(json) => {
            let mut e = Enc::new(id, 3);
            e.str(json);
            e.done()
        }
    }
}

pub fn decode_reply(frame: &[u8]) -> Result<(u64, Reply), String> {
    let mut d = Dec { b: frame, p: 0 };
    let id = d.u64()?;
    let r = match d.u8()? {
        0 => {
            let (n, dim) = (d.u32()?, d.u32()?);
            let all = d.f32s(n.checked_mul(dim).ok_or("too many values")?)?;
            Reply::Vectors(if dim == 0 {
                vec![Vec::new(); n]
            } else {
                all.chunks(dim).map(<[f32]>::to_vec).collect()
            })
        }
        1 => {
            let kind = of_code(&KINDS, d.u8()?, "error kind")?;
            let message = d.str()?;
            Reply::Failed(ClipError { kind, message, detail: d.opt_str()?, hint: d.opt_str()? })
        }
        2 => Reply::Model(ModelInfo {
            family: d.str()?,
            device_used: of_code(&DEVICES, d.u8()?, "device")?,
            image_batch: d.opt_u32()?,
            text_batch: d.opt_u32()?,
        }),
        3 => Reply::Status(d.str()?),
        t => return Err(format!("unknown reply {t}")),
    };
    d.end()?;
    Ok((id, r))
}

/// Cuts a byte stream into frames' bodies.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
    start: usize,
}

impl Frames {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, if one has arrived; an error for a frame over [`MAX_FRAME`].
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, String> {
        let have = &self.buf[self.start..];
        if have.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(have[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(format!("a message of {len} bytes is over the limit of {MAX_FRAME}"));
        }
        if have.len() < 4 + len {
            return Ok(None);
        }
        let body = have[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        ModelSpec {
            name: "m".into(), folder: "/x/ü".into(), stamp: "sha256:ab".into(), options: "{}".into()
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        &frame[4..]
    }

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::Embed {
                model: spec(),
                priority: Priority::Bulk,
                input: Input::Images { n: 2, tensor: vec![1.5, -0.0, f32::MAX, 3.0] },
            },
            Request::Embed {
                model: spec(),
                priority: Priority::Interactive,
                input: Input::Texts(vec!["a photo".into(), String::new()]),
            },
            Request::Describe { model: spec() },
            Request::Cancel { id: 7 },
            Request::Status,
        ];
        for (i, r) in all.iter().enumerate() {
            let f = encode_request(i as u64 + 40, r);
            assert_eq!(decode_request(body(&f)).unwrap(), (i as u64 + 40, r.clone()));
            // every truncation is an error, never a panic
            for cut in 0..body(&f).len() {
                assert!(decode_request(&body(&f)[..cut]).is_err(), "cut at {cut} of {r:?}");
            }
        }
    }

    #[test]
    fn replies_round_trip() {
        let all = [
            Reply::Vectors(vec![vec![0.25, 0.5], vec![1.0, -1.0]]),
            Reply::Vectors(vec![]),
            Reply::Failed(ClipError::new(ErrorKind::ModelChanged, "files changed").hint("register again")),
            Reply::Failed(ClipError::new(ErrorKind::InvalidText, "bad").detail("row 3")),
            Reply::Model(ModelInfo {
                family: "clip".into(),
                device_used: Device::Cpu,
                image_batch: Some(1),
                text_batch: None,
            }),
            Reply::Status("{\"models\": []}".into()),
        ];
        for r in &all {
            let f = encode_reply(9, r);
            assert_eq!(decode_reply(body(&f)).unwrap(), (9, r.clone()));
        }
    }

    #[test]
    fn hostile_frames_are_errors() {
        // an image count that does not divide the values, a huge count, an unknown tag
        let mut f = encode_request(
            1,
            &Request::Embed {
                model: spec(),
                priority: Priority::Bulk,
                input: Input::Images { n: 3, tensor: vec![0.0; 4] },
            },
        );
        assert!(decode_request(body(&f)).unwrap_err().contains("do not make 3 images"));
        let tail = f.len() - 4 * 4 - 8;
        f[tail..tail + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_request(body(&f)).is_err());
        let mut g = encode_request(2, &Request::Status);
        g[12] = 99;
        assert!(decode_request(body(&g)).unwrap_err().contains("unknown request"));
        let mut frames = Frames::default();
        frames.push(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(frames.next_frame().is_err());
    }

    #[test]
    fn frames_arrive_in_pieces() {
        let a = encode_request(1, &Request::Status);
        let b = encode_request(2, &Request::Cancel { id: 1 });
        let stream: Vec<u8> = a.iter().chain(&b).copied().collect();
        let mut frames = Frames::default();
        let mut got = Vec::new();
        for byte in stream {
            frames.push(&[byte]);
            while let Some(f) = frames.next_frame().unwrap() {
                got.push(decode_request(&f).unwrap().0);
            }
        }
        assert_eq!(got, [1, 2]);
    }
}
