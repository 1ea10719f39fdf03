//! Values of `kubedirector run`'s flags and headers: durations as Kubernetes components take
//! them, and the User-Agent naming the replica.

use std::time::Duration;

/// Parses `1500ms`, `15s`, `2m` or plain seconds (`15`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use 500ms, 15s or 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The User-Agent value: `kubedirector/VERSION (IDENTITY)`, the identity reduced to characters a
/// header may carry. The API server derives the field manager from the part before the first
/// `/`, so it stays `kubedirector` for every replica.
pub fn user_agent(identity: &str) -> ::http::HeaderValue {
    let id: String = identity
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    ::http::HeaderValue::from_str(&format!("kubedirector/{} ({id})", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|_| {
            ::http::HeaderValue::from_static(concat!("kubedirector/", env!("CARGO_PKG_VERSION")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kube_flags_and_bad_ones_are_errors() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_user_agent_names_the_replica_and_keeps_the_field_manager() {
        let ua = user_agent("kd-7f9c_0123abc");
        let ua = ua.to_str().unwrap();
        assert!(ua.starts_with("kubedirector/"), "{ua}");
        assert!(ua.ends_with("(kd-7f9c_0123abc)"), "{ua}");
        assert_eq!(ua.split('/').next(), Some("kubedirector"));
        // Characters a header cannot carry are dropped.
        assert!(user_agent("a\nb (c)").to_str().unwrap().ends_with("(abc)"));
    }
}
