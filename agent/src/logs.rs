//! Container logs in the CRI format, as upstream's runtimes write them:
//! one line per line the container wrote, `<RFC 3339 time> <stream> <tag>
//! <content>`, where the tag is `F` for a full line and `P` for part of a
//! longer one. The time each line was written is what `kubectl logs
//! --timestamps` and `--since`/`--since-time` need.
//!
//! The container's stdout and stderr are FIFOs the agent reads (the shim
//! writes them); [`copy`] turns what arrives into log lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;

/// Lines longer than this are split into `P` parts (upstream's 16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// The FIFOs of a container whose log is at `log_path`.
pub fn fifos(log_path: &Path) -> (PathBuf, PathBuf) {
    (log_path.with_extension("stdout"), log_path.with_extension("stderr"))
}

/// One parsed log line.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// `P`: the content continues in the next line of the same stream.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its newline); `None` if it is not CRI format.
pub fn parse(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    if !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    Some(LogLine { time, stream, partial: tag.first() == Some(&b'P'), content })
}

/// Appends `content` (one line, no newline) as CRI lines written now.
pub fn format(out: &mut Vec<u8>, stream: &str, content: &[u8], partial: bool) {
    let now = jiff::Timestamp::now();
    let mut chunks = content.chunks(MAX_LINE).peekable();
    if content.is_empty() {
        out.extend_from_slice(format!("{now} {stream} {} \n", if partial { "P" } else { "F" }).as_bytes());
        return;
    }
    while let Some(chunk) = chunks.next() {
        let tag = if partial || chunks.peek().is_some() { "P" } else { "F" };
        out.extend_from_slice(format!("{now} {stream} {tag} ").as_bytes());
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
}

/// How long an unfinished line of a container on a terminal waits for its
/// end before it is logged as a partial line (a shell's prompt).
pub const TTY_PARTIAL_AFTER: Duration = Duration::from_millis(100);

/// Copies what the container writes to its FIFOs into the log as CRI lines
/// until `exited` resolves (then drains what is left).
pub async fn copy(
    mut stdout: pipe::Receiver,
    mut stderr: pipe::Receiver,
    log_path: PathBuf,
    exited: impl std::future::Future<Output = ()>,
    partial_after: Option<Duration>,
) {
    let mut log = match tokio::fs::OpenOptions::new().create(true).append(true).open(&log_path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %log_path.display(), error = %e, "opening the container log failed");
            return;
        }
    };
    let (mut obuf, mut ebuf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    // Bytes of a line not finished yet, per stream.
    let (mut opending, mut epending) = (Vec::new(), Vec::new());
    let mut exited = std::pin::pin!(exited);
    loop {
        let mut out = Vec::new();
        tokio::select! {
            n = stdout.read(&mut obuf) => if let Ok(n @ 1..) = n { lines(&mut out, "stdout", &mut opending, &obuf[..n]) },
            n = stderr.read(&mut ebuf) => if let Ok(n @ 1..) = n { lines(&mut out, "stderr", &mut epending, &ebuf[..n]) },
            () = &mut exited => break,
            // An unfinished line that stays so is written as a partial one.
            () = tokio::time::sleep(partial_after.unwrap_or(Duration::from_secs(3600))),
                if partial_after.is_some() && !(opending.is_empty() && epending.is_empty()) => {
                for (stream, pending) in [("stdout", &mut opending), ("stderr", &mut epending)] {
                    if !pending.is_empty() {
                        format(&mut out, stream, pending, true);
                        pending.clear();
                    }
                }
            }
        }
        if !out.is_empty() && log.write_all(&out).await.is_err() {
            return;
        }
    }
    let mut out = Vec::new();
    for (rx, buf, pending, stream) in
        [(&mut stdout, &mut obuf, &mut opending, "stdout"), (&mut stderr, &mut ebuf, &mut epending, "stderr")]
    {
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(50), rx.read(buf)).await {
            lines(&mut out, stream, pending, &buf[..n]);
        }
        if !pending.is_empty() {
            format(&mut out, stream, pending, false);
        }
    }
    let _ = log.write_all(&out).await;
}

/// Formats the complete lines of `pending` + `data`; keeps the rest pending.
fn lines(out: &mut Vec<u8>, stream: &str, pending: &mut Vec<u8>, data: &[u8]) {
    pending.extend_from_slice(data);
    let mut start = 0;
    while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
        format(out, stream, &pending[start..start + i], false);
        start += i + 1;
    }
    pending.drain(..start);
    while pending.len() >= MAX_LINE {
        let rest = pending.split_off(MAX_LINE);
        format(out, stream, pending, true);
        *pending = rest;
    }
}

/// What a log request asks for (`pods/log`'s query).
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub timestamps: bool,
    /// Lines written before this are skipped.
    pub since: Option<jiff::Timestamp>,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

/// Turns CRI log lines (whole lines, each ending in a newline) into what the
/// client sees. Lines not in CRI format are passed on as they are.
pub fn render(raw: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let Some(l) = parse(body) else {
            out.extend_from_slice(line);
            continue;
        };
        if let Some(since) = opts.since
            && l.time.parse::<jiff::Timestamp>().is_ok_and(|t| t < since)
        {
            continue;
        }
        if opts.timestamps {
            out.extend_from_slice(l.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l.content);
        if !l.partial {
            out.push(b'\n');
        }
    }
    out
}

/// The whole lines of `raw` that [`render`] keeps for `opts`, minus
/// `tail_lines` and `limit_bytes`, rendered.
pub fn select(raw: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut out = render(raw, opts);
    if let Some(n) = opts.tail_lines {
        out = tail(&out, n);
    }
    if let Some(l) = opts.limit_bytes {
        out.truncate(l);
    }
    out
}

/// The last `n` lines.
pub fn tail(content: &[u8], n: usize) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return content[i + 1..].to_vec();
            }
        }
    }
    content.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_lines_parse_back_with_their_stream_and_time() {
        let mut out = Vec::new();
        lines(&mut out, "stderr", &mut Vec::new(), b"one\ntwo\n");
        let text = String::from_utf8(out.clone()).expect("valid in this test");
        let got: Vec<LogLine<'_>> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(parse).collect();
        assert_eq!(got.len(), 2, "{text}");
        assert_eq!((got[0].stream, got[0].partial, got[0].content), ("stderr", false, &b"one"[..]));
        assert!(got[1].time.parse::<jiff::Timestamp>().is_ok(), "{text}");
        assert!(got[1].time.ends_with('Z'), "UTC as upstream writes it: {text}");
    }

    #[test]
    fn unfinished_lines_wait_and_long_lines_are_split_into_parts() {
        let (mut out, mut pending) = (Vec::new(), Vec::new());
        lines(&mut out, "stdout", &mut pending, b"hal");
        assert!(out.is_empty());
        lines(&mut out, "stdout", &mut pending, b"f\n");
        assert_eq!(render(&out, &LogOptions::default()), b"half\n");

        let mut out = Vec::new();
        lines(&mut out, "stdout", &mut Vec::new(), &[b'x'; MAX_LINE + 5]);
        let rendered = render(&out, &LogOptions::default());
        assert_eq!(rendered.len(), MAX_LINE, "the part waits for the rest of its line");
        assert!(out.starts_with(b"20") && out.windows(9).any(|w| w == b" stdout P"));
    }

    #[test]
    fn timestamps_since_tail_and_limit_select_as_upstream() {
        let raw = b"2024-01-01T00:00:00.5Z stdout F first\n\
                    2024-01-01T00:00:01Z stderr P sec\n\
                    2024-01-01T00:00:01Z stderr F ond\n\
                    2024-01-01T00:00:02.000000001Z stdout F third\n";
        assert_eq!(select(raw, &LogOptions::default()), b"first\nsecond\nthird\n");
        let ts = LogOptions { timestamps: true, ..Default::default() };
        assert!(select(raw, &ts).starts_with(b"2024-01-01T00:00:00.5Z first\n"));
        let since = LogOptions {
            since: Some("2024-01-01T00:00:01Z".parse().expect("valid in this test")),
            ..Default::default()
        };
        assert_eq!(select(raw, &since), b"second\nthird\n");
        let tail = LogOptions { tail_lines: Some(1), ..Default::default() };
        assert_eq!(select(raw, &tail), b"third\n");
        let limit = LogOptions { limit_bytes: Some(8), ..Default::default() };
        assert_eq!(select(raw, &limit), b"first\nse");
        assert_eq!(select(b"not cri\n", &LogOptions::default()), b"not cri\n");
    }

    #[test]
    fn tail_keeps_the_last_lines_with_their_newlines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n".to_vec());
        assert_eq!(tail(b"a\nb\nc", 1), b"c".to_vec());
        assert_eq!(tail(b"a\n", 5), b"a\n".to_vec());
        assert_eq!(tail(b"a\n", 0), Vec::<u8>::new());
    }
}
