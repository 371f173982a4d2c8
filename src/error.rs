//! Errors as people need them: every cause down to the root, once.

/// `error` and each of its sources, joined by ": ", leaving out a source
/// whose words the text already holds (thiserror messages often embed
/// theirs). reqwest's "error sending request for url (...)" becomes
/// "...: client error (Connect): tcp connect error: Connection refused".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !words.is_empty() && !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Outer(Middle(root));
        // "middle: refused" holds "refused": not repeated.
        assert_eq!(super::chain(&error), "outer: middle: refused");
    }
}
