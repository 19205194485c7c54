//! Passwords never reach logs or error messages: URLs are shown through [`redact_url`].

/// Replaces the password of `scheme://user:password@host/...` with `***`.
///
/// URLs without a password, or that do not parse as `scheme://authority`, come back
/// unchanged apart from that.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The userinfo ends at the *last* '@' of the authority: passwords may contain '@'.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

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
    fn leaves_urls_without_password() {
        for url in [
            "mysql://root@127.0.0.1:3307",
            "redis://127.0.0.1:6380",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
