//! The backend side: one persistent, non-blocking connection to the service. Requests are
//! tagged with ids; a reply to a request this client gave up on (a cancelled statement) is
//! dropped when it arrives. The caller supplies the wait, so that a backend waits on its latch
//! and the socket together and stays cancellable; [`poll_wait`] is the plain one.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::wire::{self, Frames, Input, ModelInfo, ModelSpec, Priority, Reply, Request};
use crate::error::{ClipError, ErrorKind, Result};

/// Waits until the socket `fd` is readable (or writable, when the flag is set), or until
/// something else needs attention; an error ends the wait (and the request is abandoned).
pub type Waiter<'a> = &'a mut dyn FnMut(RawFd, bool) -> Result<()>;

pub struct Client {
    stream: UnixStream,
    frames: Frames,
    out: Vec<u8>,
    sent: usize,
    next_id: u64,
    pending: HashSet<u64>,
    done: HashMap<u64, Reply>,
}

/// The connection is gone (the service stopped or restarted): the caller drops this client
/// and connects again on its next call.
pub fn lost(reason: impl std::fmt::Display) -> ClipError {
    ClipError::new(ErrorKind::ServiceUnavailable, format!("lost the connection to the pg_clip inference service: {reason}"))
        .hint("The service restarts by itself; run the statement again. The server log says why it stopped (lines starting \"pg_clip inference\").")
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            frames: Frames::default(),
            out: Vec::new(),
            sent: 0,
            next_id: 1,
            pending: HashSet::new(),
            done: HashMap::new(),
        })
    }

    /// Queue a request and send what the socket takes now; its id for [`Client::wait`].
    pub fn submit(&mut self, req: &Request) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.out.extend_from_slice(&wire::encode_request(id, req));
        self.pending.insert(id);
        self.flush()?;
        Ok(id)
    }

    /// Wait for the reply to `id`, sending and receiving as the socket allows. If the wait
    /// ends early (the waiter's error, a panic or a Postgres ERROR unwinding through it), the
    /// request is abandoned: the service is asked to drop it if it is still queued.
    pub fn wait(&mut self, id: u64, waiter: Waiter) -> Result<Reply> {
        struct Abandon<'a> {
            client: &'a mut Client,
            id: u64,
            armed: bool,
        }
        impl Drop for Abandon<'_> {
            fn drop(&mut self) {
                if self.armed {
                    self.client.abandon(self.id);
                }
            }
        }
        let mut g = Abandon { client: self, id, armed: true };
        loop {
            g.client.flush()?;
            g.client.receive()?;
            if let Some(r) = g.client.done.remove(&id) {
                g.armed = false;
                return Ok(r);
            }
            if !g.client.pending.contains(&id) {
                g.armed = false;
                return Err(ClipError::new(
                    ErrorKind::ServiceUnavailable,
                    format!("no request {id} is waiting"),
                ));
            }
            let fd = g.client.stream.as_raw_fd();
            let writing = g.client.sent < g.client.out.len();
            waiter(fd, writing)?;
        }
    }

    pub fn call(&mut self, req: &Request, waiter: Waiter) -> Result<Reply> {
        let id = self.submit(req)?;
        self.wait(id, waiter)
    }

    /// Embeddings of `input` (one row per item), or the service's error for them.
    pub fn embed(
        &mut self,
        model: &ModelSpec,
        priority: Priority,
        input: Input,
        waiter: Waiter,
    ) -> Result<Vec<Vec<f32>>> {
        let n = input.len();
        if let Input::Texts(texts) = &input {
            texts.iter().try_for_each(|t| crate::tokenize::check_length(t))?;
        }
        match self.call(&Request::Embed { model: model.clone(), priority, input }, waiter)? {
            Reply::Vectors(v) if v.len() == n => Ok(v),
            Reply::Failed(e) => Err(e),
            other => Err(lost(format!("unexpected reply {}", reply_name(&other)))),
        }
    }

    /// Load `model` in the service (if it is not loaded) and describe it.
    pub fn describe(&mut self, model: &ModelSpec, waiter: Waiter) -> Result<ModelInfo> {
        match self.call(&Request::Describe { model: model.clone() }, waiter)? {
            Reply::Model(m) => Ok(m),
            Reply::Failed(e) => Err(e),
            other => Err(lost(format!("unexpected reply {}", reply_name(&other)))),
        }
    }

    pub fn status(&mut self, waiter: Waiter) -> Result<String> {
        match self.call(&Request::Status, waiter)? {
            Reply::Status(s) => Ok(s),
            Reply::Failed(e) => Err(e),
            other => Err(lost(format!("unexpected reply {}", reply_name(&other)))),
        }
    }

    /// Give up on `id`: its reply, if one comes, is dropped; the service drops it if queued.
    pub fn abandon(&mut self, id: u64) {
        self.done.remove(&id);
        if self.pending.remove(&id) {
            let cancel = self.next_id;
            self.next_id += 1;
            self.out.extend_from_slice(&wire::encode_request(cancel, &Request::Cancel { id }));
            let _ = self.flush();
        }
    }

    /// Requests sent and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn flush(&mut self) -> Result<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(lost("the socket was closed")),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(lost(e)),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<()> {
        let mut buf = [0u8; 1 << 16];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(lost("the service closed the connection")),
                Ok(n) => self.frames.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(lost(e)),
            }
        }
        while let Some(f) = self.frames.next_frame().map_err(lost)? {
            let (id, reply) = wire::decode_reply(&f).map_err(lost)?;
            // a reply to an abandoned request is stale: dropped
            if self.pending.remove(&id) {
                self.done.insert(id, reply);
            }
        }
        Ok(())
    }
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Vectors(_) => "vectors",
        Reply::Failed(_) => "error",
        Reply::Model(_) => "model",
        Reply::Status(_) => "status",
    }
}

/// The plain wait: poll(2) on the socket for up to `timeout_ms`.
pub fn poll_wait(fd: RawFd, write: bool, timeout_ms: i32) -> Result<()> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN | if write { libc::POLLOUT } else { 0 }, revents: 0 };
    // SAFETY: one valid pollfd on the stack.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
        return Err(lost(std::io::Error::last_os_error()));
    }
    Ok(())
}
