//! What of a secret is ever shown. Header values are masked by allow-list:
//! only headers known to describe the request rather than authorise it
//! (`SHOWN_HEADERS`), and those the profile names in `public_headers`,
//! are shown; every other value keeps at most its scheme word and last
//! four characters. Every query value of a URL is masked. Every place
//! that prints a header value or a target URL (console, report, summary,
//! `validate`, error messages) goes through here.

/// Headers whose values are shown as they are.
pub const SHOWN_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "anthropic-beta",
    "anthropic-version",
    "content-type",
    "openai-beta",
    "user-agent",
];

/// The placeholder the example profiles carry instead of a key: shown,
/// so a profile that still holds it is recognisable.
pub const PLACEHOLDER: &str = "REPLACE_WITH_VK";

/// A header value as it may be shown: as it is for a shown header (by
/// `SHOWN_HEADERS` or the profile's `public`, compared without case), or
/// for the placeholder; otherwise masked.
pub fn header_value(name: &str, value: &str, public: &[String]) -> String {
    let shown = SHOWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
        || public.iter().any(|h| h.eq_ignore_ascii_case(name));
    if shown || value.contains(PLACEHOLDER) {
        return value.to_string();
    }
    mask(value)
}

/// A secret as it may be shown: `Bearer ***7890` keeps the scheme word
/// and the last four characters of a key longer than 12, enough to tell
/// keys apart; shorter ones show nothing.
pub fn mask(value: &str) -> String {
    let (scheme, key) = match value.split_once(' ') {
        Some((scheme, key)) if scheme.chars().all(|c| c.is_ascii_alphabetic()) => {
            (format!("{scheme} "), key)
        }
        _ => (String::new(), value),
    };
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return format!("{scheme}***");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{scheme}***{tail}")
}

/// A URL as it may be shown: every query value and any fragment masked
/// (`?key=***&x=***`), and any user information (`user:pass@`).
pub fn url(url: &str) -> String {
    let (url, fragment) = match url.split_once('#') {
        Some((url, _)) => (url, "#***"),
        None => (url, ""),
    };
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return format!("{url}{fragment}");
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=***"),
            None => pair.to_string(),
        })
        .collect();
    format!("{base}?{}{fragment}", masked.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_masked_unless_known_harmless_or_public() {
        let public = vec!["X-Route".to_string()];
        let v = |name: &str, value: &str| header_value(name, value, &public);
        assert_eq!(
            v("Authorization", "Bearer sk-1234567890abcd"),
            "Bearer ***abcd"
        );
        assert_eq!(v("x-api-key", "short"), "***");
        assert_eq!(v("Cookie", "session=abcdefghijklmnop"), "***mnop");
        assert_eq!(v("Proxy-Authorization", "Basic dXNlcjpwYXNz"), "Basic ***");
        for name in [
            "Ocp-Apim-Subscription-Key",
            "X-Auth-Key",
            "X-Portkey-Virtual-Key",
            "X-Anything",
        ] {
            assert_eq!(v(name, "0123456789abcdef"), "***cdef", "{name}");
        }
        assert_eq!(v("Content-Type", "application/json"), "application/json");
        assert_eq!(v("anthropic-version", "2023-06-01"), "2023-06-01");
        assert_eq!(v("x-route", "blue"), "blue");
        assert_eq!(
            v("Authorization", "Bearer REPLACE_WITH_VK"),
            "Bearer REPLACE_WITH_VK"
        );
    }

    #[test]
    fn urls_lose_query_values_fragments_and_credentials() {
        assert_eq!(
            url("http://h/v1?key=abc&x=1&flag"),
            "http://h/v1?key=***&x=***&flag"
        );
        assert_eq!(url("http://h/v1"), "http://h/v1");
        assert_eq!(url("http://h/v1#tok"), "http://h/v1#***");
        assert_eq!(url("http://u:p@h:80/v1?k=v"), "http://***@h:80/v1?k=***");
        assert_eq!(url("http://u:p@h"), "http://***@h");
    }
}
