//! What an auth request was ([`AuthOp`]) and how it ended ([`Outcome`]).

use std::fmt;

/// The authentication operation a route performs.
///
/// Every metric, stat and alert of authwatch is per operation. The default route table maps the
/// usual paths onto these (see [`Routes`](crate::Routes)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AuthOp {
    /// Sign-in with any credential: password, social callback, magic link, one-time code, second
    /// factor, OAuth token endpoint.
    Login,
    /// Creating an account.
    Registration,
    /// Checking a session or access token: get-session, introspection, userinfo, and every route
    /// behind a [`TokenGuard`](crate::TokenGuardLayer).
    TokenValidation,
    /// Exchanging a refresh token for a new access token.
    TokenRefresh,
    /// Ending a session.
    Logout,
    /// Requesting or completing a password reset.
    PasswordReset,
}

impl AuthOp {
    /// How many operations there are: the length of [`AuthOp::ALL`].
    pub const COUNT: usize = 6;

    /// Every operation, in [`index`](Self::index) order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Login,
        Self::Registration,
        Self::TokenValidation,
        Self::TokenRefresh,
        Self::Logout,
        Self::PasswordReset,
    ];

    /// A dense index in `0..AuthOp::COUNT`, for per-operation arrays.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used as the `auth.operation` attribute value: `login`, `registration`,
    /// `token_validation`, `token_refresh`, `logout`, `password_reset`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Registration => "registration",
            Self::TokenValidation => "token_validation",
            Self::TokenRefresh => "token_refresh",
            Self::Logout => "logout",
            Self::PasswordReset => "password_reset",
        }
    }
}

impl fmt::Display for AuthOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an auth request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailureReason {
    /// 401 on a sign-in-like operation, gRPC `UNAUTHENTICATED` (16).
    InvalidCredentials,
    /// An invalid or expired token: 401 on token validation, `WWW-Authenticate: … error="invalid_token"`,
    /// gRPC 16 on token validation, or a [`TokenGuard`](crate::TokenGuardLayer) rejection. Each
    /// one is also an invalid-token attempt.
    InvalidToken,
    /// 403, gRPC `PERMISSION_DENIED` (7).
    Forbidden,
    /// 400 or 422, gRPC `INVALID_ARGUMENT` (3).
    BadRequest,
    /// 409 (for example an e-mail already registered), gRPC `ALREADY_EXISTS` (6).
    Conflict,
    /// 423: the account is locked.
    LockedOut,
    /// 404 or 405: no such route, method or resource. Often a scanner probing a default path
    /// the service does not have, so alert rules can leave this reason out of failure ratios.
    NotFound,
    /// Any other 4xx (413, 415, …).
    ClientError,
    /// 5xx, other gRPC errors, a malformed or missing `grpc-status`, a body that failed, or an
    /// error from the inner service. Carried by [`Outcome::Error`].
    ServerError,
}

impl FailureReason {
    /// The `auth.failure.reason` attribute value, for example `invalid_credentials`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad_request",
            Self::Conflict => "conflict",
            Self::LockedOut => "locked_out",
            Self::NotFound => "not_found",
            Self::ClientError => "client_error",
            Self::ServerError => "server_error",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one auth request ended. Every auth request ends in exactly one outcome.
///
/// A handler may decide the outcome itself by putting an `Outcome` in the response extensions
/// (`response.extensions_mut().insert(Outcome::Failure(FailureReason::LockedOut))`); the layer then
/// uses it instead of the status code. `Outcome::Failure(FailureReason::ServerError)` is read as
/// [`Outcome::Error`], and an override of [`Outcome::Cancelled`] is ignored (only a drop cancels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// 2xx, 3xx, gRPC `OK`.
    Success,
    /// The caller was refused: wrong credentials, invalid token, forbidden, bad request, ….
    Failure(FailureReason),
    /// 429 or gRPC `RESOURCE_EXHAUSTED` (8). Counted apart, not as a failure.
    RateLimited,
    /// The service failed: 5xx, other gRPC errors, a body error. Counted as a failure too, with
    /// reason [`FailureReason::ServerError`].
    Error,
    /// The response future or body was dropped before the end (client gone, outer timeout).
    /// Counted apart, never as success or failure.
    Cancelled,
}

impl Outcome {
    /// The `auth.outcome` attribute value: `success`, `failure`, `rate_limited`, `error`,
    /// `cancelled`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(_) => "failure",
            Self::RateLimited => "rate_limited",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }

    /// The failure reason: `Some` for [`Failure`](Self::Failure) and
    /// [`Error`](Self::Error) (always [`FailureReason::ServerError`]).
    #[must_use]
    pub const fn reason(self) -> Option<FailureReason> {
        match self {
            Self::Failure(r) => Some(r),
            Self::Error => Some(FailureReason::ServerError),
            _ => None,
        }
    }

    /// True for outcomes that count as failures: [`Failure`](Self::Failure) and
    /// [`Error`](Self::Error).
    #[must_use]
    pub const fn is_failure(self) -> bool {
        matches!(self, Self::Failure(_) | Self::Error)
    }

    /// True when the request was an invalid-token attempt.
    #[must_use]
    pub const fn is_invalid_token(self) -> bool {
        matches!(self, Self::Failure(FailureReason::InvalidToken))
    }

    /// Reads a handler's override: `Failure(ServerError)` becomes `Error`; `Cancelled` is not a
    /// valid override.
    pub(crate) fn normalize_override(self) -> Option<Self> {
        match self {
            Self::Failure(FailureReason::ServerError) => Some(Self::Error),
            Self::Cancelled => None,
            other => Some(other),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(r) if !matches!(self, Self::Error) => write!(f, "failure ({r})"),
            _ => f.write_str(self.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_all() {
        for (i, op) in AuthOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
    }

    #[test]
    fn overrides_normalise() {
        assert_eq!(
            Outcome::Failure(FailureReason::ServerError).normalize_override(),
            Some(Outcome::Error)
        );
        assert_eq!(Outcome::Cancelled.normalize_override(), None);
        assert_eq!(
            Outcome::Failure(FailureReason::LockedOut).to_string(),
            "failure (locked_out)"
        );
        assert_eq!(Outcome::Error.reason(), Some(FailureReason::ServerError));
    }
}
