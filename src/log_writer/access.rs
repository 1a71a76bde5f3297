//! The access log's lines, formatted straight into the log writer's queue. One line per request
//! is the gateway's most frequent log record: through `tracing`'s formatter (a visitor per field,
//! `core::fmt` for every value, the timestamp formatted anew) it cost ~15 000 instructions, a
//! sixth of all a proxied request takes; written here it costs a few hundred. Hand-written
//! because no crate formats one fixed record both as `tracing`'s text and JSON layouts, which
//! log pipelines already parse: the lines are the same as `tracing`'s own.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;

use super::LogWriter;

/// Where access lines go, and in which layout, once logging is set up.
#[derive(Debug)]
pub struct AccessLog {
    writer: LogWriter,
    json: bool,
}

static ACCESS: OnceLock<AccessLog> = OnceLock::new();

/// Sends access lines to `writer` from now on, as JSON objects or text lines.
pub fn install_access_log(writer: LogWriter, json: bool) {
    let _ = ACCESS.set(AccessLog { writer, json });
}

/// The access log, when installed (else access lines go through `tracing`).
pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS.get()
}

thread_local! {
    /// The formatted second of the last timestamp on this thread: `2026-12-05T04:47:35`.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// One access line being written.
#[derive(Debug)]
pub struct AccessLine {
    buf: Vec<u8>,
    json: bool,
    first: bool,
}

impl AccessLog {
    /// A new line, stamped now.
    pub fn line(&self) -> AccessLine {
        let mut buf = Vec::with_capacity(320);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut stamp = [0u8; 27];
        SECOND.with(|cell| {
            let mut cached = cell.borrow_mut();
            if cached.0 != now.as_secs() {
                *cached = (now.as_secs(), civil(now.as_secs()));
            }
            stamp[..19].copy_from_slice(&cached.1);
        });
        stamp[19] = b'.';
        let micros = now.subsec_micros();
        for (i, d) in (20..26).rev().zip(0..) {
            stamp[i] = b'0' + ((micros / 10u32.pow(d)) % 10) as u8;
        }
        stamp[26] = b'Z';
        if self.json {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            buf.extend_from_slice(&stamp);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{");
        } else {
            buf.extend_from_slice(&stamp);
            buf.extend_from_slice(b"  INFO authgate::access:");
        }
        AccessLine { buf, json: self.json, first: true }
    }

    /// Queues a finished line.
    pub fn write(&self, line: AccessLine) {
        let mut buf = line.buf;
        if line.json {
            buf.extend_from_slice(b"},\"target\":\"authgate::access\"}\n");
        } else {
            buf.push(b'\n');
        }
        self.writer.queue(buf);
    }
}

impl AccessLine {
    fn key(&mut self, key: &str) {
        match (self.json, std::mem::take(&mut self.first)) {
            (true, first) => {
                if !first {
                    self.buf.push(b',');
                }
                self.buf.push(b'"');
                self.buf.extend_from_slice(key.as_bytes());
                self.buf.extend_from_slice(b"\":");
            }
            (false, _) => {
                self.buf.push(b' ');
                self.buf.extend_from_slice(key.as_bytes());
                self.buf.push(b'=');
            }
        }
    }

    /// A text field, quoted (`route="wiki"`, as `tracing` writes a `&str`).
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.quoted(value);
        self
    }

    /// A word written bare in text lines (`method=GET`, as `tracing` writes a `Display` value)
    /// and quoted in JSON.
    pub fn word(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.key(key);
        if self.json {
            self.quoted(&value.to_string());
        } else {
            let _ = write!(self.buf, "{value}");
        }
        self
    }

    /// A number.
    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let mut digits = itoa::Buffer::new();
        self.buf.extend_from_slice(digits.format(value).as_bytes());
        self
    }

    /// `value` in double quotes, escaped as JSON (and as `tracing`'s `Debug` of a `&str` writes
    /// the same characters in text lines).
    fn quoted(&mut self, value: &str) {
        if value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
            self.buf.push(b'"');
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
        } else if self.json {
            // serde_json's escaping, with its own quotes
            let _ = serde_json::to_writer(&mut self.buf, value);
        } else {
            let _ = write!(self.buf, "{value:?}");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, UTC (proleptic Gregorian calendar, after Howard
/// Hinnant's `civil_from_days`).
fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [0u8; 19];
    let mut put = |at: usize, value: u64, width: usize| {
        for i in 0..width {
            out[at + width - 1 - i] = b'0' + ((value / 10u64.pow(i as u32)) % 10) as u8;
        }
    };
    put(0, year.clamp(0, 9999) as u64, 4);
    put(5, month as u64, 2);
    put(8, day as u64, 2);
    put(11, rest / 3600, 2);
    put(14, rest / 60 % 60, 2);
    put(17, rest % 60, 2);
    for (at, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[at] = sep;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(&civil(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&civil(1_796_444_855), b"2026-12-05T04:27:35");
        assert_eq!(&civil(4_107_542_399), b"2100-02-28T23:59:59");
    }

    fn formatted(json: bool) -> String {
        let (writer, _flush) = super::super::start(std::io::sink(), 64).unwrap();
        let log = AccessLog { writer, json };
        let mut line = log.line();
        line.word("request_id", "2aa3c06f-1")
            .text("route", "pub")
            .word("method", http::Method::GET)
            .text("path", "/a\"b\\c")
            .number("status", 200)
            .text("user", "-");
        let mut buf = line.buf;
        if json {
            buf.extend_from_slice(b"},\"target\":\"authgate::access\"}");
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn text_lines_read_as_tracing_writes_them() {
        let text = formatted(false);
        let (stamp, rest) = text.split_at(27);
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.', "{stamp}");
        assert_eq!(
            rest,
            r#"  INFO authgate::access: request_id=2aa3c06f-1 route="pub" method=GET path="/a\"b\\c" status=200 user="-""#
        );
    }

    #[test]
    fn awkward_values_keep_their_quotes() {
        for value in ["\"", "a\"", "\\", "x\ny", "é", "\u{200b}", "\"\""] {
            let (writer, _flush) = super::super::start(std::io::sink(), 64).unwrap();
            for json in [false, true] {
                let log = AccessLog { writer: writer.clone(), json };
                let mut line = log.line();
                line.text("path", value).number("status", 200);
                let text = String::from_utf8(line.buf).unwrap();
                if json {
                    let v: serde_json::Value =
                        serde_json::from_str(&format!("{}}}}}", &text[text.find('{').unwrap()..])).unwrap();
                    assert_eq!(v["fields"]["path"], value);
                    assert_eq!(v["fields"]["status"], 200);
                } else {
                    assert!(text.ends_with(&format!(" path={value:?} status=200")), "{text}");
                }
            }
        }
    }

    #[test]
    fn json_lines_parse_with_every_field() {
        let v: serde_json::Value = serde_json::from_str(&formatted(true)).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "authgate::access");
        let f = &v["fields"];
        assert_eq!(f["request_id"], "2aa3c06f-1");
        assert_eq!(f["method"], "GET");
        assert_eq!(f["path"], "/a\"b\\c");
        assert_eq!(f["status"], 200);
        assert_eq!(f["user"], "-");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
