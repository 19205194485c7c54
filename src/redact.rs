//! Passwords never reach logs, error messages or API answers: URLs are shown through
//! [`redact_url`], and text that may quote a URL or its parts (a client library's error
//! message) through [`scrub`].

/// Replaces the password of `scheme://user:password@host/...` with `***`.
///
/// The userinfo is everything between `://` and the *last* `@` of the string, not what a
/// URL parser would call the authority: a password may hold `/`, `?`, `#` or `@`
/// unescaped, and a parser that stops the authority at the first `/` sees no userinfo at
/// all — it would echo `amqp://guest:pa/ss@host` whole. Over-redacting a URL whose path
/// or query holds an `@` costs a less informative message; under-redacting leaks the
/// password. A string without `://` (one no parser can read) is treated the same way from
/// its start. Userinfo without `:` is a user name and stays.
pub fn redact_url(url: &str) -> String {
    let Some((start, userinfo, rest)) = split_userinfo(url) else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:***{rest}", &url[..start]),
        None => url.to_owned(),
    }
}

/// `text` with every trace of `url`'s password replaced by `***`: the URL itself, the
/// password as written and percent-decoded, and each piece of it between URL delimiters
/// (`/ ? # @ :`), which is what a URL parser that misread the URL quotes back (a port
/// `pa`, a path `ss@host`). Pieces shorter than 3 characters are left: replacing every
/// `a` of a message would hide more than it protects.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    let Some(password) = password_of(url) else {
        return out;
    };
    let decoded = percent_decode(password);
    let mut secrets: Vec<&str> = vec![password, decoded.as_str()];
    for whole in [password, decoded.as_str()] {
        secrets.extend(whole.split(['/', '?', '#', '@', ':']));
    }
    // Longest first, so a piece never splits a longer secret before it is replaced.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    for secret in secrets {
        if secret.chars().count() >= 3 && secret != "***" {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// `(index where the userinfo starts, userinfo, the rest from its '@')`.
fn split_userinfo(url: &str) -> Option<(usize, &str, &str)> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let after = &url[start..];
    let at = after.rfind('@')?;
    Some((start, &after[..at], &after[at..]))
}

/// The password of `url` as written (percent-encoded or not), if it has one.
fn password_of(url: &str) -> Option<&str> {
    let (_, userinfo, _) = split_userinfo(url)?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `%XX` sequences decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_password_only() {
        assert_eq!(
            redact_url("mysql://root:s3cr@t@db:3306/shop"),
            "mysql://root:***@db:3306/shop"
        );
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
    }

    #[test]
    fn hides_passwords_a_url_parser_cannot_read() {
        for (url, shown) in [
            (
                "amqp://guest:pa/ss@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            ("amqp://u:a?b#c@h:1/v", "amqp://u:***@h:1/v"),
            ("mysql://u:p@ss/w:rd@db:3306/x", "mysql://u:***@db:3306/x"),
            ("u:hunter2@db:3306", "u:***@db:3306"),
            ("mysql://u:%2Fpw@db", "mysql://u:***@db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn leaves_urls_without_password() {
        for url in [
            "mysql://root@127.0.0.1:3307",
            "redis://127.0.0.1:6380",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn scrubs_what_a_parser_quotes_back() {
        let url = "amqp://guest:s3cr/et-pw@127.0.0.1:5672/%2f";
        let message =
            format!("invalid port number in s3cr; vhost et-pw@127.0.0.1:5672/%2f; url {url}");
        let scrubbed = scrub(&message, url);
        assert!(
            !scrubbed.contains("s3cr") && !scrubbed.contains("et-pw"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("amqp://guest:***@127.0.0.1:5672/%2f"));
        // Percent-encoded in the URL, decoded in the message.
        assert_eq!(
            scrub("login as u with p/w0rd failed", "mysql://u:p%2Fw0rd@db"),
            "login as u with *** failed"
        );
        // Nothing to hide.
        assert_eq!(scrub("x", "redis://127.0.0.1"), "x");
    }
}
