//! Turning a file's bytes into text the way editors do.
//!
//! Users' markdown arrives as UTF-8 (with or without a byte-order mark), as
//! UTF-16 with a BOM (Windows editors), and with CRLF or lone CR line ends.
//! All of that is accepted and normalised to `\n`-terminated UTF-8, so the
//! parsers after this only ever see one shape. Anything else that is not
//! valid UTF-8 is an error that says where the first bad byte is.

/// Why bytes could not be read as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// 1-based line of the first bad byte.
    pub line: usize,
    /// 1-based column (in characters) of the first bad byte.
    pub column: usize,
    pub message: String,
}

/// Decodes `bytes` to normalised text (no BOM, `\n` line ends).
pub fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
    let text = if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        utf8(rest)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, u16::from_be_bytes)?
    } else {
        utf8(bytes)?
    };
    Ok(normalise_line_ends(text))
}

fn utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            // The prefix is valid by construction, so this cannot fail.
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let byte = bytes[error.valid_up_to()];
            Err(DecodeError {
                line,
                column,
                message: format!(
                    "file is not UTF-8: invalid byte 0x{byte:02X}; save it as UTF-8 (or UTF-16 with a byte-order mark)"
                ),
            })
        }
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, DecodeError> {
    let units = bytes.chunks(2).map(|pair| match pair {
        [a, b] => unit([*a, *b]),
        // An odd trailing byte cannot be a UTF-16 unit; make it an unpaired
        // surrogate so that decoding reports it below.
        _ => 0xD800,
    });
    let mut text = String::with_capacity(bytes.len() / 2);
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(c) => text.push(c),
            Err(_) => {
                let line = text.matches('\n').count() + 1;
                let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                return Err(DecodeError {
                    line,
                    column,
                    message: "file has a UTF-16 byte-order mark but is not valid UTF-16".into(),
                });
            }
        }
    }
    Ok(text)
}

fn normalise_line_ends(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_utf8_bom_and_crlf() {
        assert_eq!(decode(b"\xEF\xBB\xBFa\r\nb\rc").unwrap(), "a\nb\nc");
    }

    #[test]
    fn reads_utf16_with_either_byte_order() {
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("h\u{e9}\r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("h\u{e9}\r\n".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode(&le).unwrap(), "h\u{e9}\n");
        assert_eq!(decode(&be).unwrap(), "h\u{e9}\n");
    }

    #[test]
    fn reports_first_invalid_byte_position() {
        let error = decode(b"ok\nab\xFFc").unwrap_err();
        assert_eq!((error.line, error.column), (2, 3));
        assert!(error.message.contains("not UTF-8"));
        assert!(error.message.contains("0xFF"));
    }
}
