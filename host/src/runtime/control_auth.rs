//! Who may change a running pipeline through the control API.
//!
//! Reading (`GET /status`, `GET /metrics`) is open. Requests that change something
//! (`POST /savepoint`, and any later mutating endpoint) go through [`ControlAuth::authorize`]:
//!
//! - with a token (`--control-token-file PATH` or `HEADWATER_CONTROL_TOKEN`), the request must
//!   carry `Authorization: Bearer <token>`; the comparison takes the same time wherever the
//!   tokens differ;
//! - without a token, the API answers them only on a loopback address (`127.0.0.1`, `::1`),
//!   where only local users reach it, as before tokens existed; on any other address they are
//!   refused, and starting the API there without a token logs a warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The environment variable that holds the control API's token.
pub const TOKEN_ENV: &str = "HEADWATER_CONTROL_TOKEN";

/// Where `headwater run` keeps the token it made when none was given, readable by its owner
/// only, and where `headwater savepoint` looks for it: beside the pipeline's state folder
/// (`.headwater/<name>/state.control-token` by default), which `--fresh` may delete.
pub fn generated_token_path(state_dir: &Path) -> PathBuf {
    state_dir.with_extension("control-token")
}

/// The bearer token of the control API. Never printed: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlToken(String);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(<hidden>)")
    }
}

/// A token that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the control token file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the control token {from} is empty; put a long random string in it (e.g. `openssl rand -hex 32`)")]
    Empty { from: String },
    #[error("the control token {from} contains whitespace or control characters inside it; use a single word such as `openssl rand -hex 32` prints")]
    Malformed { from: String },
}

impl ControlToken {
    /// A token from its text (surrounding whitespace, such as a file's final newline, is
    /// dropped).
    pub fn new(text: &str, from: &str) -> Result<ControlToken, TokenError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty { from: from.into() });
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::Malformed { from: from.into() });
        }
        Ok(ControlToken(token.to_string()))
    }

    /// The token from `file` if given, else from `HEADWATER_CONTROL_TOKEN` if set, else none.
    pub fn load(file: Option<&Path>) -> Result<Option<ControlToken>, TokenError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            return ControlToken::new(&text, &format!("file `{}`", path.display())).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(text) => ControlToken::new(&text, &format!("in {TOKEN_ENV}")).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// A new random token (32 bytes from the system's random source, as hex).
    pub fn generate() -> std::io::Result<ControlToken> {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(ControlToken(
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ))
    }

    /// Writes the token to `path`, readable by its owner only (created or replaced).
    pub fn write_private(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", self.0)
    }

    /// The token's text, to send it (clients only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Compares two byte strings in a time that depends only on the length of `given` (the part
/// a caller controls), not on where they differ.
pub fn ct_eq(given: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = given.len() ^ expected.len();
    for (i, &b) in given.iter().enumerate() {
        diff |= usize::from(b ^ expected[i % expected.len()]);
    }
    std::hint::black_box(diff) == 0
}

/// Why a request that changes something was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this request needs `Authorization: Bearer <token>` with the run's control token (--control-token-file or {TOKEN_ENV})")]
    Missing,
    #[error("the bearer token is wrong")]
    Wrong,
    #[error("the control API listens on {address}, beyond loopback, and has no token: requests that change the run are refused; start it with --control-token-file or {TOKEN_ENV}")]
    NoToken { address: SocketAddr },
}

impl AuthError {
    /// The HTTP status line it is answered with.
    pub fn status(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Wrong => "401 Unauthorized",
            AuthError::NoToken { .. } => "403 Forbidden",
        }
    }
}

/// What a request shows of itself to be authorized.
pub trait Credentials {
    /// The value of its `Authorization` header, if it has one.
    fn authorization(&self) -> Option<&str>;
}

/// The control API's policy for requests that change the run.
#[derive(Clone, Debug)]
pub struct ControlAuth {
    token: Option<ControlToken>,
    address: SocketAddr,
}

impl ControlAuth {
    /// The policy of an API listening on `address`.
    pub fn new(token: Option<ControlToken>, address: SocketAddr) -> ControlAuth {
        ControlAuth { token, address }
    }

    /// Whether requests that change the run are refused for want of a token.
    pub fn locked_out(&self) -> bool {
        self.token.is_none() && !self.address.ip().is_loopback()
    }

    /// Whether `request` may change the run (save, stop, upload...).
    pub fn authorize(&self, request: &impl Credentials) -> Result<(), AuthError> {
        let Some(token) = &self.token else {
            if self.address.ip().is_loopback() {
                return Ok(());
            }
            return Err(AuthError::NoToken {
                address: self.address,
            });
        };
        let given = request
            .authorization()
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or(AuthError::Missing)?;
        if ct_eq(given.as_bytes(), token.0.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req(Option<&'static str>);
    impl Credentials for Req {
        fn authorization(&self) -> Option<&str> {
            self.0
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_generated_token_is_random_and_private() {
        let a = ControlToken::generate().expect("token");
        let b = ControlToken::generate().expect("token");
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = generated_token_path(dir.path());
        a.write_private(&path).expect("write");
        b.write_private(&path).expect("replace");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = std::fs::read_to_string(&path).expect("read");
        assert_eq!(ControlToken::new(&read, "file").expect("token"), b);
    }

    #[test]
    fn ct_eq_matches_only_equal_strings() {
        assert!(ct_eq(b"s3cret", b"s3cret"));
        assert!(!ct_eq(b"s3cres", b"s3cret"));
        assert!(!ct_eq(b"s3cre", b"s3cret"));
        assert!(
            !ct_eq(b"s3crets3cret", b"s3cret"),
            "a repeated token is not the token"
        );
        assert!(!ct_eq(b"", b"s3cret"));
        assert!(!ct_eq(b"", b""), "an empty expected token never matches");
    }

    #[test]
    fn a_token_is_required_and_checked() {
        let token = ControlToken::new("s3cret\n", "test").expect("token");
        let auth = ControlAuth::new(Some(token), addr("127.0.0.1:9464"));
        assert_eq!(auth.authorize(&Req(None)), Err(AuthError::Missing));
        assert_eq!(
            auth.authorize(&Req(Some("Basic s3cret"))),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.authorize(&Req(Some("Bearer nope"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(auth.authorize(&Req(Some("Bearer s3cret"))), Ok(()));
        assert_eq!(auth.authorize(&Req(Some("bearer  s3cret "))), Ok(()));
        assert!(!auth.locked_out());
    }

    #[test]
    fn without_a_token_only_loopback_may_change_the_run() {
        for a in ["127.0.0.1:1", "[::1]:1"] {
            let auth = ControlAuth::new(None, addr(a));
            assert_eq!(auth.authorize(&Req(None)), Ok(()), "{a}");
            assert!(!auth.locked_out());
        }
        for a in ["0.0.0.0:1", "[::]:1", "192.0.2.7:1"] {
            let auth = ControlAuth::new(None, addr(a));
            let refused = auth.authorize(&Req(Some("Bearer x"))).expect_err(a);
            assert_eq!(refused.status(), "403 Forbidden");
            assert!(
                refused.to_string().contains("--control-token-file"),
                "{refused}"
            );
            assert!(auth.locked_out());
        }
    }

    #[test]
    fn tokens_are_never_printed_and_must_be_one_word() {
        let token = ControlToken::new("abc", "test").expect("token");
        assert_eq!(format!("{token:?}"), "ControlToken(<hidden>)");
        assert!(matches!(
            ControlToken::new(" \n", "file `t`"),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            ControlToken::new("two words", "file `t`"),
            Err(TokenError::Malformed { .. })
        ));
    }
}
