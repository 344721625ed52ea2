//! The hand-rolled HTTP/1.1 pieces shared by the client and the mock:
//! response parsing (`response`) and allocation-free number formatting for
//! request and response heads.

pub mod response;

/// Appends a decimal number without going through `fmt`.
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a lowercase hexadecimal number (chunk sizes).
pub fn push_hex(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(value & 15) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for v in [0u64, 7, 10, 255, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
            out.clear();
            push_hex(&mut out, v);
            assert_eq!(out, format!("{v:x}").as_bytes());
        }
    }
}
