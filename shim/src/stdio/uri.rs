//! The stdio strings containerd hands a shim, read as containerd's own shims read them
//! (`pkg/process/io.go` in containerd 1.6–2.x): empty means nothing; a bare path or
//! `fifo://` a FIFO containerd reads; `file:///p` output appended to a file (`ctr run
//! --log-uri file:///p`); `binary:///bin?k=v` a logger process (`--log-uri binary://…`).

use std::path::PathBuf;

use crate::errors::ShimError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    None,
    Fifo(PathBuf),
    File(PathBuf),
    Binary {
        path: PathBuf,
        /// The query as the logger's argv: each key, then its first value unless empty.
        args: Vec<String>,
    },
}

/// Parses one stdio string. Relative paths and unknown schemes are refused: containerd never
/// sends them, and guessing would write somewhere nobody reads.
pub(crate) fn parse(s: &str) -> Result<Target, ShimError> {
    if s.is_empty() {
        return Ok(Target::None);
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return absolute(s, s).map(Target::Fifo);
    };
    // After `scheme://` comes an (empty) host, then the absolute path.
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = absolute(&decode(path), s)?;
    match scheme {
        "fifo" => Ok(Target::Fifo(path)),
        "file" => Ok(Target::File(path)),
        "binary" => Ok(Target::Binary {
            path,
            args: form_urlencoded::parse(query.as_bytes())
                .flat_map(|(k, v)| {
                    let mut a = vec![k.into_owned()];
                    if !v.is_empty() {
                        a.push(v.into_owned());
                    }
                    a
                })
                .collect(),
        }),
        other => Err(ShimError::InvalidArgument(format!(
            "stdio {s:?}: unsupported scheme {other:?} (expected a FIFO path, fifo://, file:// or binary://)"
        ))),
    }
}

fn absolute(path: &str, whole: &str) -> Result<PathBuf, ShimError> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(ShimError::InvalidArgument(format!(
            "stdio {whole:?}: the path must be absolute"
        )))
    }
}

/// Percent-decoding of the path part (`%20` → space), as Go's `url.Parse` does.
fn decode(path: &str) -> String {
    form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_told_apart() {
        assert_eq!(parse("").expect("empty"), Target::None);
        assert_eq!(
            parse("/run/containerd/fifo/1/t-stdout").expect("path"),
            Target::Fifo("/run/containerd/fifo/1/t-stdout".into())
        );
        assert_eq!(
            parse("fifo:///a/b").expect("fifo"),
            Target::Fifo("/a/b".into())
        );
        assert_eq!(
            parse("file:///var/log/my%20log+1.txt").expect("file"),
            Target::File("/var/log/my log+1.txt".into())
        );
    }

    #[test]
    fn binary_query_becomes_argv() {
        assert_eq!(
            parse("binary:///usr/bin/logger?tag=a%20b&verbose&n=1").expect("binary"),
            Target::Binary {
                path: "/usr/bin/logger".into(),
                args: vec![
                    "tag".into(),
                    "a b".into(),
                    "verbose".into(),
                    "n".into(),
                    "1".into()
                ],
            }
        );
    }

    #[test]
    fn relative_paths_and_unknown_schemes_are_refused() {
        for bad in [
            "relative/fifo",
            "file://host/x",
            "http:///x",
            "binary://rel",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(matches!(e, ShimError::InvalidArgument(_)), "{bad}: {e}");
        }
    }
}
