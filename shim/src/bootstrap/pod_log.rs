//! The shim's log lines carry their pod: containerd copies every shim's `log` FIFO into its
//! own log as it comes, with nothing saying which shim wrote a line, and a node runs one shim
//! per pod. Each line starts with `sandbox=<id> `, and, once the shim has read the sandbox's
//! CRI annotations, `pod=<namespace>/<name> ` after it ([`name_pod`]).

use std::io::Write;
use std::sync::{Arc, OnceLock};

/// The pod's Kubernetes name, once known; set once (a shim serves one pod).
static POD_NAME: OnceLock<Box<str>> = OnceLock::new();

/// Puts `namespace/name` on every log line from now on. Only the first call counts.
pub(crate) fn name_pod(display_name: &str) {
    let _ = POD_NAME.set(display_name.into());
}

/// A `MakeWriter` for tracing-subscriber's fmt layer: each event's writer starts its output
/// with the prefix, and repeats it after every newline it writes (an event with a multi-line
/// field, such as a boot failure's quoted logs).
pub(super) struct Prefixed<W> {
    prefix: Arc<str>,
    /// Where the pod's name appears ([`POD_NAME`]; a test's own cell in tests).
    name: &'static OnceLock<Box<str>>,
    /// `prefix` with the pod's name, made at the first line after it appeared.
    named: OnceLock<Box<str>>,
    out: Arc<W>,
}

impl<W> Prefixed<W> {
    pub(super) fn new(sandbox_id: &str, out: W) -> Self {
        Self::named_by(sandbox_id, out, &POD_NAME)
    }

    fn named_by(sandbox_id: &str, out: W, name: &'static OnceLock<Box<str>>) -> Self {
        Prefixed {
            prefix: format!("sandbox={sandbox_id} ").into(),
            name,
            named: OnceLock::new(),
            out: Arc::new(out),
        }
    }

    fn prefix(&self) -> &str {
        match self.name.get() {
            Some(n) => self
                .named
                .get_or_init(|| format!("{}pod={n} ", self.prefix).into()),
            None => &self.prefix,
        }
    }
}

/// One event's writer.
pub(super) struct LineWriter<'a, W> {
    prefix: &'a str,
    out: &'a W,
    at_line_start: bool,
}

impl<W> Write for LineWriter<'_, W>
where
    for<'w> &'w W: Write,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut line = buf;
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            line = &buf[..=nl];
        }
        // Prefix and line go out in one write: containerd reads the FIFO concurrently with
        // nothing else writing to it, but one write keeps a line whole for it anyway.
        let mut out = self.out;
        if self.at_line_start {
            let mut whole = Vec::with_capacity(self.prefix.len() + line.len());
            whole.extend_from_slice(self.prefix.as_bytes());
            whole.extend_from_slice(line);
            out.write_all(&whole)?;
        } else {
            out.write_all(line)?;
        }
        self.at_line_start = line.ends_with(b"\n");
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut out = self.out;
        out.flush()
    }
}

impl<'a, W: 'static> tracing_subscriber::fmt::MakeWriter<'a> for Prefixed<W>
where
    for<'w> &'w W: Write,
{
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            prefix: self.prefix(),
            out: &self.out,
            at_line_start: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    /// A shared buffer, written through `&Sink` as a `File` is.
    #[derive(Default)]
    struct Sink(Mutex<Vec<u8>>);

    impl Write for &Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_of_every_event_names_the_pod() {
        let p = Prefixed::new("abc123", Sink::default());
        p.make_writer().write_all(b"INFO one\n").expect("write");
        p.make_writer()
            .write_all(b"ERROR agent did not come up: why\n--- hull-vmm log ---\nlast\n")
            .expect("write");
        let mut w = p.make_writer();
        w.write_all(b"WARN split ").expect("write");
        w.write_all(b"in two\n").expect("write");
        let got = String::from_utf8(p.out.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(
            got,
            "sandbox=abc123 INFO one\n\
             sandbox=abc123 ERROR agent did not come up: why\n\
             sandbox=abc123 --- hull-vmm log ---\n\
             sandbox=abc123 last\n\
             sandbox=abc123 WARN split in two\n"
        );
    }

    #[test]
    fn the_pods_name_follows_once_known() {
        static NAME: OnceLock<Box<str>> = OnceLock::new();
        let p = Prefixed::named_by("abc123", Sink::default(), &NAME);
        p.make_writer().write_all(b"INFO before\n").expect("write");
        NAME.set("default/web-0".into()).expect("set once");
        p.make_writer().write_all(b"INFO after\n").expect("write");
        let got = String::from_utf8(p.out.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(
            got,
            "sandbox=abc123 INFO before\nsandbox=abc123 pod=default/web-0 INFO after\n"
        );
    }
}
