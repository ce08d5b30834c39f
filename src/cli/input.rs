//! Reading registrations from NDJSON or a JSON array, from a file or stdin.
//!
//! Accepted on purpose: a UTF-8 byte-order mark at the start, CRLF line
//! endings and empty lines (skipped). Refused: fields regsaga does not
//! know (a misspelling must not drop a payment silently), records that are
//! not valid JSON, and records that break a validation rule; each is
//! rejected with its position and the field, and the others go on.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use regsaga::{Registration, RegistrationInput};

/// The longest accepted record, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// A record that was not accepted.
#[derive(Debug)]
pub struct Rejected {
    /// `line N` (NDJSON) or `record N` (JSON array, 1-based).
    pub position: String,
    pub reason: String,
    /// The record's raw text, for a rejects file that can be fixed.
    pub raw: String,
}

/// One record's position (1-based) and what came of it: the checked
/// registration with its raw text and its position in words, or why it
/// was rejected.
pub type Item = (usize, Result<(Registration, String, String), Rejected>);

/// Reads all records lazily.
pub struct Records {
    inner: Box<dyn Iterator<Item = Item> + Send>,
}

impl Iterator for Records {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        self.inner.next()
    }
}

/// Opens `path` (`-` for stdin) and detects its format from its first
/// non-blank byte: `[` means a JSON array, anything else NDJSON.
pub fn open(path: &Path) -> anyhow::Result<Records> {
    let reader: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        anyhow::ensure!(
            !path.is_dir(),
            "the input {} is a directory; give an NDJSON or JSON file, or - for stdin",
            path.display()
        );
        let file = File::open(path)
            .with_context(|| format!("could not open the input file {}", path.display()))?;
        Box::new(file)
    };
    let mut reader = BufReader::new(reader);
    skip_bom(&mut reader)?;

    let is_array = loop {
        let buf = reader.fill_buf().context("could not read the input")?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let first = buf[i];
                reader.consume(i);
                break first == b'[';
            }
            None if buf.is_empty() => break false,
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };

    let inner: Box<dyn Iterator<Item = Item> + Send> = if is_array {
        Box::new(array(reader)?.into_iter())
    } else {
        Box::new(ndjson(reader))
    };
    Ok(Records { inner })
}

fn skip_bom(reader: &mut impl BufRead) -> anyhow::Result<()> {
    let buf = reader.fill_buf().context("could not read the input")?;
    if buf.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    Ok(())
}

fn ndjson(reader: impl BufRead + Send + 'static) -> impl Iterator<Item = Item> + Send {
    let mut lines = reader.split(b'\n').enumerate();
    std::iter::from_fn(move || loop {
        let (index, line) = lines.next()?;
        let number = index + 1;
        let position = format!("line {number}");
        let mut bytes = match line {
            Ok(bytes) => bytes,
            Err(e) => {
                return Some((
                    number,
                    Err(reject(position, format!("unreadable: {e}"), "")),
                ))
            }
        };
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Some((number, parse(position, &bytes)));
    })
}

fn array(reader: impl Read) -> anyhow::Result<Vec<Item>> {
    // Raw elements keep each record's own text, so that a duplicate key
    // inside one is seen, as it would be on an NDJSON line.
    let values: Vec<Box<serde_json::value::RawValue>> = serde_json::from_reader(reader)
        .context("the input starts with '[' but is not a valid JSON array")?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let number = index + 1;
            let position = format!("record {number}");
            (number, parse(position, value.get().as_bytes()))
        })
        .collect())
}

fn parse(position: String, bytes: &[u8]) -> Result<(Registration, String, String), Rejected> {
    let raw = String::from_utf8_lossy(bytes).into_owned();
    if bytes.len() > MAX_RECORD_BYTES {
        let reason = format!("record is longer than {MAX_RECORD_BYTES} bytes");
        return Err(reject(position, reason, ""));
    }

    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(reject(
            position,
            "a record must be a JSON object".into(),
            &raw,
        ));
    }

    // Straight into the input type, not through a map: a key given twice
    // is refused rather than silently taking its last value.
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let input: RegistrationInput = match serde_path_to_error::deserialize(&mut json) {
        Ok(input) => input,
        Err(e) => {
            let inner = e.inner();
            let reason = if inner.is_syntax() || inner.is_eof() {
                format!("not valid JSON ({inner})")
            } else {
                let path = e.path().to_string();
                match describe(&inner.to_string()) {
                    Described::NotAnObject => "a record must be a JSON object".to_owned(),
                    Described::Field(text) if path == "." => text,
                    Described::Field(text) => format!("{path}: {text}"),
                }
            };
            return Err(reject(position, reason, &raw));
        }
    };
    if let Err(e) = json.end() {
        return Err(reject(position, format!("not valid JSON ({e})"), &raw));
    }
    match input.validate() {
        Ok(registration) => Ok((registration, raw, position)),
        Err(invalid) => Err(reject(position, invalid.to_string(), &raw)),
    }
}

/// What a data error from serde says, in words fit to show.
enum Described {
    NotAnObject,
    Field(String),
}

/// serde's message for a wrong type repeats the offending value
/// ("invalid type: string \"4111…\", expected a boolean"); keep only what
/// was expected. Messages about field names name only field names.
fn describe(message: &str) -> Described {
    // serde_json appends the position; the record's own position is named.
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    };
    if message.contains("expected struct RegistrationInput") {
        return Described::NotAnObject;
    }
    let text = if message.starts_with("unknown field") {
        message.replace(", expected", " is not accepted; expected")
    } else if let Some(field) = message.strip_prefix("missing field ") {
        format!("{field} is required")
    } else if let Some(field) = message.strip_prefix("duplicate field ") {
        format!("{field} is given twice; give each field once")
    } else {
        match message.split_once(", expected ") {
            Some((_, expected)) => format!("has the wrong type (expected {expected})"),
            None => "has the wrong type".to_owned(),
        }
    };
    Described::Field(text)
}

fn reject(position: String, reason: String, raw: &str) -> Rejected {
    Rejected {
        position,
        reason,
        raw: raw.to_owned(),
    }
}

/// How many records an input file holds, for progress: its non-blank
/// lines, or the length of its array. `None` for stdin or when unknown.
pub fn count(path: &Path) -> Option<usize> {
    // Counting reads the file once more; past this size it is not worth it.
    const MAX_COUNTED_BYTES: u64 = 256 * 1024 * 1024;
    if path == Path::new("-") || std::fs::metadata(path).ok()?.len() > MAX_COUNTED_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    if text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('[')
    {
        let values: Vec<serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
        return Some(values.len());
    }
    Some(text.lines().filter(|l| !l.trim().is_empty()).count())
}
