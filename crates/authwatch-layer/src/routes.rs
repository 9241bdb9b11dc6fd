//! The route table: which requests are auth requests, and which [`AuthOp`] each one is.

use std::fmt;

use std::collections::HashMap;

use http::{HeaderMap, Method};
use rustc_hash::FxBuildHasher;

use crate::classify::is_grpc;
use crate::op::AuthOp;

/// The default base path of Better Auth's routes.
pub const DEFAULT_BASE_PATH: &str = "/api/auth";

/// A set of HTTP methods a route answers to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Methods(u16);

const METHOD_LIST: [(Method, &str); 9] = [
    (Method::GET, "GET"),
    (Method::POST, "POST"),
    (Method::PUT, "PUT"),
    (Method::DELETE, "DELETE"),
    (Method::PATCH, "PATCH"),
    (Method::HEAD, "HEAD"),
    (Method::OPTIONS, "OPTIONS"),
    (Method::CONNECT, "CONNECT"),
    (Method::TRACE, "TRACE"),
];

impl Methods {
    /// Every method except `OPTIONS` (CORS preflights are not auth attempts).
    pub const ANY: Self = Self(0b1_1011_1111 | 1 << 15);
    /// `GET` only.
    pub const GET: Self = Self(1);
    /// `POST` only.
    pub const POST: Self = Self(1 << 1);
    /// `GET` and `POST`.
    pub const GET_POST: Self = Self(0b11);

    /// Just `method`. Methods outside the standard nine match nothing but [`Methods::ANY`].
    #[must_use]
    pub fn only(method: &Method) -> Self {
        Self(bit(method))
    }

    /// This set plus `method`.
    #[must_use]
    pub fn and(self, method: &Method) -> Self {
        Self(self.0 | bit(method))
    }

    fn contains(self, method: &Method) -> bool {
        let b = bit(method);
        if b == 0 {
            // Extension methods: only for routes that take any method.
            return self.0 & (1 << 15) != 0;
        }
        self.0 & b != 0
    }
}

fn bit(method: &Method) -> u16 {
    METHOD_LIST
        .iter()
        .position(|(m, _)| m == method)
        .map_or(0, |i| 1 << i)
}

impl fmt::Debug for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ANY {
            return f.write_str("ANY");
        }
        let mut l = f.debug_set();
        for (i, (_, name)) in METHOD_LIST.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                l.entry(name);
            }
        }
        l.finish()
    }
}

/// The `http.request.method` attribute value: the method's name for the standard nine,
/// `_OTHER` for anything else (OpenTelemetry's rule, which keeps the attribute bounded).
#[must_use]
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The index of a route in its [`RouteTable`]: dense, from 0 to `routes().len()`, so sinks can keep
/// per-route state in a plain array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u16);

/// One route of a built [`RouteTable`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouteInfo {
    /// The route's index.
    pub id: RouteId,
    /// The path template (the `http.route` label), for example `/api/auth/sign-in/email` or
    /// `/{service}/Login` for gRPC methods matched by name.
    pub template: Box<str>,
    /// The operation.
    pub op: AuthOp,
    /// The methods it answers to.
    pub methods: Methods,
    /// For gRPC routes, the method name (the `rpc.method` label).
    pub rpc_method: Option<Box<str>>,
    /// Whether responses may be gRPC (and so carry `grpc-status`): true for your routes and
    /// gRPC methods, false for the built-in HTTP routes, whose responses skip that check.
    pub grpc: bool,
}

#[derive(Debug, Clone)]
struct Spec {
    path: String,
    under_base: bool,
    methods: Methods,
    op: AuthOp,
    /// A built-in HTTP route: never answers gRPC, so its responses skip the gRPC check.
    builtin: bool,
}

/// The route table builder: the default routes, plus, minus or instead of yours.
///
/// The default table (what [`Routes::default`] holds):
///
/// | operation | HTTP routes | gRPC methods (`/{service}/…`) |
/// |---|---|---|
/// | `Login` | `{base}/sign-in/*` (email, social, username, …), `{base}/callback/{provider}`, `{base}/two-factor/verify-*`, `{base}/magic-link/verify`, `{base}/passkey/verify-authentication`, `{base}/oauth2/token`, `/oauth/token`, `/oauth2/token`, `/token`, `/login`, `/signin`, `/sign-in`, `/auth/login`, `/api/login` | `Login`, `SignIn` |
/// | `Registration` | `{base}/sign-up/*`, `/register`, `/signup`, `/sign-up`, `/auth/register`, `/api/register` | `Register`, `SignUp` |
/// | `TokenValidation` | `{base}/get-session`, `{base}/oauth2/userinfo`, `/oauth/introspect`, `/oauth2/introspect`, `/introspect`, `/userinfo`, `/oauth2/userinfo` | `ValidateToken` |
/// | `TokenRefresh` | `{base}/refresh-token`, `{base}/get-access-token`, `/token/refresh`, `/auth/refresh` | `RefreshToken` |
/// | `Logout` | `{base}/sign-out`, `{base}/revoke-session`, `{base}/revoke-sessions`, `{base}/revoke-other-sessions`, `/oauth/revoke`, `/oauth2/revoke`, `/logout`, `/signout`, `/sign-out`, `/auth/logout`, `/api/logout` | `Logout`, `SignOut` |
/// | `PasswordReset` | `{base}/request-password-reset`, `{base}/forget-password`, `{base}/reset-password`, `{base}/reset-password/{token}`, `/password/reset`, `/forgot-password`, `/reset-password` | `ResetPassword`, `RequestPasswordReset` |
///
/// `{base}` is [`DEFAULT_BASE_PATH`] (`/api/auth`) unless you call [`base_path`](Self::base_path).
/// Routes that change state take `POST` only, so `GET /login` serving a login page is not a
/// login attempt; `get-session`, `userinfo`, the OAuth callback and the reset link take `GET`
/// (and `POST` where the protocol allows). gRPC methods match any `/{package.Service}/{Method}`
/// path with a `content-type: application/grpc…` request; register a full path with
/// [`route`](Self::route) to match one service only.
///
/// The metric label of a route is its template, never the raw path, so the number of series
/// stays bounded whatever paths clients send.
#[derive(Debug, Clone)]
pub struct Routes {
    base: String,
    specs: Vec<Spec>,
    grpc: Vec<(String, AuthOp)>,
}

impl Default for Routes {
    fn default() -> Self {
        use AuthOp::*;
        let mut r = Self::empty();
        let (p, g, gp) = (Methods::POST, Methods::GET, Methods::GET_POST);
        let base_routes: &[(&str, Methods, AuthOp)] = &[
            ("/sign-in/email", p, Login),
            ("/sign-in/social", p, Login),
            ("/sign-in/username", p, Login),
            ("/sign-in/anonymous", p, Login),
            ("/sign-in/phone-number", p, Login),
            ("/sign-in/email-otp", p, Login),
            ("/sign-in/magic-link", p, Login),
            ("/sign-in/passkey", p, Login),
            ("/sign-in/oauth2", p, Login),
            ("/sign-in/{*method}", p, Login),
            ("/callback/{provider}", gp, Login),
            ("/oauth2/callback/{provider}", gp, Login),
            ("/two-factor/verify-totp", p, Login),
            ("/two-factor/verify-otp", p, Login),
            ("/two-factor/verify-backup-code", p, Login),
            ("/magic-link/verify", g, Login),
            ("/passkey/verify-authentication", p, Login),
            ("/oauth2/token", p, Login),
            ("/sign-up/email", p, Registration),
            ("/sign-up/{*method}", p, Registration),
            ("/get-session", g, TokenValidation),
            ("/oauth2/userinfo", gp, TokenValidation),
            ("/refresh-token", p, TokenRefresh),
            ("/get-access-token", p, TokenRefresh),
            ("/sign-out", p, Logout),
            ("/revoke-session", p, Logout),
            ("/revoke-sessions", p, Logout),
            ("/revoke-other-sessions", p, Logout),
            ("/request-password-reset", p, PasswordReset),
            ("/forget-password", p, PasswordReset),
            ("/reset-password", p, PasswordReset),
            ("/reset-password/{token}", g, PasswordReset),
        ];
        for (path, m, op) in base_routes {
            r.push(path, true, *m, *op, true);
        }
        let root_routes: &[(&str, Methods, AuthOp)] = &[
            ("/oauth/token", p, Login),
            ("/oauth2/token", p, Login),
            ("/token", p, Login),
            ("/login", p, Login),
            ("/signin", p, Login),
            ("/sign-in", p, Login),
            ("/auth/login", p, Login),
            ("/api/login", p, Login),
            ("/register", p, Registration),
            ("/signup", p, Registration),
            ("/sign-up", p, Registration),
            ("/auth/register", p, Registration),
            ("/api/register", p, Registration),
            ("/oauth/introspect", p, TokenValidation),
            ("/oauth2/introspect", p, TokenValidation),
            ("/introspect", p, TokenValidation),
            ("/userinfo", gp, TokenValidation),
            ("/oauth2/userinfo", gp, TokenValidation),
            ("/token/refresh", p, TokenRefresh),
            ("/auth/refresh", p, TokenRefresh),
            ("/oauth/revoke", p, Logout),
            ("/oauth2/revoke", p, Logout),
            ("/logout", p, Logout),
            ("/signout", p, Logout),
            ("/sign-out", p, Logout),
            ("/auth/logout", p, Logout),
            ("/api/logout", p, Logout),
            ("/password/reset", p, PasswordReset),
            ("/forgot-password", p, PasswordReset),
            ("/reset-password", p, PasswordReset),
        ];
        for (path, m, op) in root_routes {
            r.push(path, false, *m, *op, true);
        }
        for (name, op) in [
            ("Login", Login),
            ("SignIn", Login),
            ("Register", Registration),
            ("SignUp", Registration),
            ("ValidateToken", TokenValidation),
            ("RefreshToken", TokenRefresh),
            ("Logout", Logout),
            ("SignOut", Logout),
            ("ResetPassword", PasswordReset),
            ("RequestPasswordReset", PasswordReset),
        ] {
            r.grpc.push((name.to_owned(), op));
        }
        r
    }
}

impl Routes {
    /// No routes at all: add your own with [`route`](Self::route).
    #[must_use]
    pub fn empty() -> Self {
        Self {
            base: DEFAULT_BASE_PATH.to_owned(),
            specs: Vec::new(),
            grpc: Vec::new(),
        }
    }

    fn push(&mut self, path: &str, under_base: bool, methods: Methods, op: AuthOp, builtin: bool) {
        // A later route for the same path replaces the earlier one.
        self.specs
            .retain(|s| !(s.path == path && s.under_base == under_base));
        self.specs.push(Spec {
            path: path.to_owned(),
            under_base,
            builtin,
            methods,
            op,
        });
    }

    /// Moves the Better Auth routes under another base path (default `/api/auth`). A trailing
    /// slash is ignored; `""` or `"/"` puts them at the root.
    #[must_use]
    pub fn base_path(mut self, base: impl Into<String>) -> Self {
        let mut base = base.into();
        while base.ends_with('/') {
            base.pop();
        }
        self.base = base;
        self
    }

    /// Adds (or replaces) a route for every method but `OPTIONS`.
    ///
    /// `path` is a [matchit](https://docs.rs/matchit/0.8) template: `/users/{id}/login`,
    /// `/auth/{*rest}`. It is also the route's `http.route` label. A gRPC method is a path too:
    /// `/auth.v1.AuthService/Login`.
    #[must_use]
    pub fn route(self, path: impl AsRef<str>, op: AuthOp) -> Self {
        self.route_methods(path, Methods::ANY, op)
    }

    /// Adds a route for the given methods only. For those methods it takes over from an
    /// earlier route with the same template (a default one, say); other methods still reach
    /// the earlier route.
    #[must_use]
    pub fn route_methods(mut self, path: impl AsRef<str>, methods: Methods, op: AuthOp) -> Self {
        self.push(path.as_ref(), false, methods, op, false);
        self
    }

    /// Removes every route with this template (default or added), wherever it came from;
    /// `/{service}/Login` removes the gRPC method name `Login`.
    #[must_use]
    pub fn remove(mut self, path: impl AsRef<str>) -> Self {
        let path = path.as_ref();
        let base = self.base.clone();
        self.specs
            .retain(|s| !(s.path == path || (s.under_base && format!("{base}{}", s.path) == path)));
        if let Some(name) = path.strip_prefix("/{service}/") {
            self.grpc.retain(|(n, _)| n != name);
        }
        self
    }

    /// Adds (or replaces) a gRPC method name matched under any service: `grpc_method("Authenticate",
    /// AuthOp::Login)` matches `/any.Service/Authenticate`.
    #[must_use]
    pub fn grpc_method(mut self, name: impl Into<String>, op: AuthOp) -> Self {
        let name = name.into();
        self.grpc.retain(|(n, _)| *n != name);
        self.grpc.push((name, op));
        self
    }

    /// Removes every route and gRPC method, default or added.
    #[must_use]
    pub fn clear(mut self) -> Self {
        self.specs.clear();
        self.grpc.clear();
        self
    }

    /// Builds the lookup table.
    ///
    /// # Errors
    ///
    /// [`RouteError`] when a template is not valid matchit syntax or conflicts with another
    /// (for example `/a/{x}` and `/a/{y}`), or when there are more than 65 535 routes.
    pub fn build(&self) -> Result<RouteTable, RouteError> {
        let mut router = matchit::Router::new();
        let mut infos: Vec<RouteInfo> = Vec::with_capacity(self.specs.len() + self.grpc.len());
        let mut paths: Vec<(String, Vec<u16>)> = Vec::new();
        for spec in &self.specs {
            let template = if spec.under_base {
                format!("{}{}", self.base, spec.path)
            } else {
                spec.path.clone()
            };
            let id = next_id(&infos)?;
            if let Some((_, ids)) = paths.iter_mut().find(|(p, _)| *p == template) {
                ids.push(id);
            } else {
                paths.push((template.clone(), vec![id]));
            }
            infos.push(RouteInfo {
                id: RouteId(id),
                template: template.into_boxed_str(),
                op: spec.op,
                methods: spec.methods,
                rpc_method: None,
                grpc: !spec.builtin,
            });
        }
        let mut exact: HashMap<Box<str>, Box<[u16]>, FxBuildHasher> = HashMap::default();
        let mut prefixes: Vec<Box<str>> = Vec::new();
        for (path, ids) in paths {
            // Two specs with the same text but one under the base and one not end up here
            // together: both stay, the method decides.
            let ids = ids.into_boxed_slice();
            // matchit panics past 25 parameters in one template (it renames them a, b, …): refuse
            // such a template here instead (found by the `routes` fuzz target).
            if param_count(&path) > MAX_PARAMS {
                return Err(RouteError::Invalid {
                    template: path,
                    reason: format!("more than {MAX_PARAMS} parameters (or `{{` braces)"),
                });
            }
            router
                .insert(path.clone(), ids.clone())
                .map_err(|e| RouteError::Invalid {
                    template: path.clone(),
                    reason: e.to_string(),
                })?;
            match path.find(['{', '}']) {
                None => {
                    exact.insert(path.into_boxed_str(), ids);
                }
                Some(i) => {
                    let prefix: Box<str> = path[..i].into();
                    if !prefixes.contains(&prefix) {
                        prefixes.push(prefix);
                    }
                }
            }
        }
        let mut grpc = Vec::with_capacity(self.grpc.len());
        for (name, op) in &self.grpc {
            if name.is_empty() || name.contains('/') {
                return Err(RouteError::Invalid {
                    template: name.clone(),
                    reason: "a gRPC method name is one path segment, like `Login`".into(),
                });
            }
            let id = next_id(&infos)?;
            grpc.push((name.clone().into_boxed_str(), id));
            infos.push(RouteInfo {
                id: RouteId(id),
                template: format!("/{{service}}/{name}").into_boxed_str(),
                op: *op,
                methods: Methods::POST,
                rpc_method: Some(name.clone().into_boxed_str()),
                grpc: true,
            });
        }
        for info in &mut infos {
            if info.rpc_method.is_none() && info.template.matches('/').count() == 2 {
                // An exact gRPC path (`/pkg.Service/Method`) also names its method.
                let path = info.template.strip_prefix('/').unwrap_or(&info.template);
                if let Some((svc, method)) = path.split_once('/') {
                    if svc.contains('.') && !method.contains('{') && !svc.contains('{') {
                        info.rpc_method = Some(method.into());
                    }
                }
            }
        }
        let common_prefix = common_prefix(&prefixes).into();
        Ok(RouteTable {
            exact,
            common_prefix,
            prefixes: prefixes.into_boxed_slice(),
            router,
            routes: infos.into_boxed_slice(),
            grpc: grpc.into_boxed_slice(),
        })
    }
}

/// The longest string every prefix starts with (on a char boundary).
fn common_prefix(prefixes: &[Box<str>]) -> &str {
    let Some(first) = prefixes.first() else {
        return "";
    };
    let mut len = first.len();
    for p in &prefixes[1..] {
        len = first
            .bytes()
            .zip(p.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

fn next_id(infos: &[RouteInfo]) -> Result<u16, RouteError> {
    u16::try_from(infos.len()).map_err(|_| RouteError::TooMany)
}

/// Why a route table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The template is not valid, or conflicts with another route. Fix or remove it.
    #[error("auth route `{template}` cannot be used: {reason}")]
    Invalid {
        /// The template.
        template: String,
        /// What matchit (or authwatch) said.
        reason: String,
    },
    /// More than 65 535 routes: that many cannot be monitored as separate series; use templates.
    #[error("more than 65535 auth routes; use path templates instead of listing paths")]
    TooMany,
}

/// The most parameters one template may hold.
const MAX_PARAMS: usize = 25;

/// An upper bound of the parameters matchit names in a template: every parameter opens with a
/// `{`, so counting all of them (escaped `{{` included) never counts too few.
fn param_count(t: &str) -> usize {
    t.bytes().filter(|&c| c == b'{').count()
}

/// The built lookup table. Cheap to query; shared by every clone of the layer.
pub struct RouteTable {
    /// Templates without parameters, by exact path: one hash, no tree walk.
    exact: HashMap<Box<str>, Box<[u16]>, FxBuildHasher>,
    /// The static start of every template with parameters: a path that starts with none of
    /// them cannot match one, and skips the tree.
    prefixes: Box<[Box<str>]>,
    /// What all of `prefixes` start with (`/api/auth/` for the defaults): one comparison turns
    /// most paths away.
    common_prefix: Box<str>,
    /// Every template (parameters and all); also what validated them.
    router: matchit::Router<Box<[u16]>>,
    routes: Box<[RouteInfo]>,
    grpc: Box<[(Box<str>, u16)]>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// Every route, indexed by [`RouteId`].
    #[must_use]
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The route with this id.
    #[must_use]
    pub fn get(&self, id: RouteId) -> Option<&RouteInfo> {
        self.routes.get(usize::from(id.0))
    }

    /// The auth route a request goes to, if any.
    ///
    /// One hash of the path for the templates without parameters; a radix-tree walk only for
    /// paths that start like a template with parameters; for a path shaped like `/x/Name` whose
    /// last segment is a known gRPC method name, one look at `content-type`.
    #[must_use]
    #[inline]
    pub fn lookup(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<&RouteInfo> {
        if let Some(ids) = self.exact.get(path) {
            // A static template wins over parameters, as in matchit.
            return self.pick(ids, method);
        }
        if !self.prefixes.is_empty()
            && path.starts_with(&*self.common_prefix)
            && self.prefixes.iter().any(|p| path.starts_with(&**p))
        {
            if let Ok(m) = self.router.at(path) {
                return self.pick(m.value, method);
            }
        }
        // Only a POST can be a gRPC call: the other requests that reach here (every request to
        // a route that is not an auth route) are answered without scanning their path.
        if self.grpc.is_empty() || *method != Method::POST {
            return None;
        }
        let (service, name) = path.strip_prefix('/')?.split_once('/')?;
        if service.is_empty() || name.contains('/') {
            return None;
        }
        let (_, id) = self.grpc.iter().find(|(n, _)| **n == *name)?;
        is_grpc(headers).then(|| &self.routes[usize::from(*id)])
    }

    fn pick(&self, ids: &[u16], method: &Method) -> Option<&RouteInfo> {
        // The route added last wins (a user's route over a default one with the same path).
        ids.iter()
            .rev()
            .map(|id| &self.routes[usize::from(*id)])
            .find(|info| info.methods.contains(method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn op(t: &RouteTable, m: Method, path: &str) -> Option<(AuthOp, String)> {
        t.lookup(&m, path, &HeaderMap::new())
            .map(|r| (r.op, r.template.to_string()))
    }

    #[test]
    fn default_table_covers_the_issue_list() {
        let t = Routes::default().build().unwrap();
        use AuthOp::*;
        let post = Method::POST;
        for (path, want) in [
            ("/api/auth/sign-in/email", Login),
            ("/api/auth/sign-in/social", Login),
            ("/api/auth/sign-in/something-new", Login),
            ("/api/auth/two-factor/verify-totp", Login),
            ("/oauth/token", Login),
            ("/oauth2/token", Login),
            ("/token", Login),
            ("/login", Login),
            ("/signin", Login),
            ("/api/auth/sign-up/email", Registration),
            ("/register", Registration),
            ("/signup", Registration),
            ("/oauth/introspect", TokenValidation),
            ("/api/auth/refresh-token", TokenRefresh),
            ("/api/auth/get-access-token", TokenRefresh),
            ("/token/refresh", TokenRefresh),
            ("/api/auth/sign-out", Logout),
            ("/logout", Logout),
            ("/api/auth/request-password-reset", PasswordReset),
            ("/api/auth/reset-password", PasswordReset),
        ] {
            assert_eq!(
                op(&t, post.clone(), path).map(|x| x.0),
                Some(want),
                "{path}"
            );
        }
        for (path, want) in [
            ("/api/auth/get-session", TokenValidation),
            ("/userinfo", TokenValidation),
            ("/api/auth/magic-link/verify", Login),
            ("/api/auth/callback/github", Login),
        ] {
            assert_eq!(op(&t, Method::GET, path).map(|x| x.0), Some(want), "{path}");
        }
        // Templates, not raw paths.
        assert_eq!(
            op(&t, post.clone(), "/api/auth/sign-in/whatever")
                .unwrap()
                .1,
            "/api/auth/sign-in/{*method}"
        );
        assert_eq!(
            op(&t, Method::GET, "/api/auth/callback/google").unwrap().1,
            "/api/auth/callback/{provider}"
        );
    }

    #[test]
    fn methods_filter() {
        let t = Routes::default().build().unwrap();
        assert!(
            op(&t, Method::GET, "/login").is_none(),
            "a login page is not a login"
        );
        assert!(op(&t, Method::OPTIONS, "/api/auth/sign-in/email").is_none());
        let t = Routes::empty().route("/x", AuthOp::Login).build().unwrap();
        assert!(op(&t, Method::OPTIONS, "/x").is_none());
        assert!(op(&t, Method::DELETE, "/x").is_some());
        assert!(op(&t, Method::from_bytes(b"BREW").unwrap(), "/x").is_some());
    }

    #[test]
    fn non_auth_paths_pass() {
        let t = Routes::default().build().unwrap();
        for p in [
            "/",
            "/api/users/1",
            "/api/auth",
            "/api/auth/",
            "/loginx",
            "/login/",
            "/api/auth/sign-in",
        ] {
            assert!(op(&t, Method::POST, p).is_none(), "{p}");
        }
    }

    #[test]
    fn grpc_by_method_name_needs_grpc_content_type() {
        let t = Routes::default().build().unwrap();
        let mut h = HeaderMap::new();
        assert!(t.lookup(&Method::POST, "/acme.Auth/Login", &h).is_none());
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let r = t.lookup(&Method::POST, "/acme.Auth/Login", &h).unwrap();
        assert_eq!((r.op, &*r.template), (AuthOp::Login, "/{service}/Login"));
        assert_eq!(r.rpc_method.as_deref(), Some("Login"));
        let r = t.lookup(&Method::POST, "/x.y.Z/ValidateToken", &h).unwrap();
        assert_eq!(r.op, AuthOp::TokenValidation);
        assert!(t.lookup(&Method::POST, "/a/b/Login", &h).is_none());
        assert!(t.lookup(&Method::POST, "//Login", &h).is_none());
        assert!(t.lookup(&Method::POST, "/acme.Auth/GetUser", &h).is_none());
    }

    #[test]
    fn user_routes_add_replace_remove_and_base_path() {
        let t = Routes::default()
            .base_path("/auth/")
            .route("/api/auth2/custom/{id}", AuthOp::PasswordReset)
            .route("/login", AuthOp::Logout)
            .remove("/logout")
            .remove("/auth/sign-out")
            .route("/acme.v1.Auth/Authenticate", AuthOp::Login)
            .grpc_method("Authenticate", AuthOp::Login)
            .build()
            .unwrap();
        assert_eq!(
            op(&t, Method::POST, "/auth/sign-in/email").unwrap().0,
            AuthOp::Login
        );
        assert!(op(&t, Method::POST, "/api/auth/sign-in/email").is_none());
        assert_eq!(
            op(&t, Method::GET, "/api/auth2/custom/9").unwrap().0,
            AuthOp::PasswordReset
        );
        assert_eq!(op(&t, Method::POST, "/login").unwrap().0, AuthOp::Logout);
        assert!(op(&t, Method::POST, "/logout").is_none());
        assert!(op(&t, Method::POST, "/auth/sign-out").is_none());
        let r = t
            .lookup(
                &Method::POST,
                "/acme.v1.Auth/Authenticate",
                &HeaderMap::new(),
            )
            .unwrap();
        assert_eq!(r.rpc_method.as_deref(), Some("Authenticate"));

        let t = Routes::default()
            .remove("/{service}/Login")
            .build()
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        assert!(t.lookup(&Method::POST, "/a.B/Login", &h).is_none());
        assert!(t.lookup(&Method::POST, "/a.B/SignIn", &h).is_some());

        let t = Routes::default().clear().build().unwrap();
        assert!(t.routes().is_empty());
        assert!(op(&t, Method::POST, "/login").is_none());
        let t = Routes::default().base_path("").build().unwrap();
        assert_eq!(
            op(&t, Method::POST, "/sign-up/email").unwrap().0,
            AuthOp::Registration
        );
    }

    #[test]
    fn a_user_route_replaces_a_default_one_with_the_same_path() {
        let t = Routes::default()
            .route_methods("/api/auth/get-session", Methods::GET, AuthOp::Login)
            .route("/api/auth/sign-out", AuthOp::PasswordReset)
            .build()
            .unwrap();
        assert_eq!(
            op(&t, Method::GET, "/api/auth/get-session").unwrap().0,
            AuthOp::Login
        );
        assert_eq!(
            op(&t, Method::POST, "/api/auth/sign-out").unwrap().0,
            AuthOp::PasswordReset
        );
        // Methods the new route does not take still reach the default one.
        let t = Routes::default()
            .route_methods("/api/auth/get-session", Methods::POST, AuthOp::Login)
            .build()
            .unwrap();
        assert_eq!(
            op(&t, Method::GET, "/api/auth/get-session").unwrap().0,
            AuthOp::TokenValidation
        );
        assert_eq!(
            op(&t, Method::POST, "/api/auth/get-session").unwrap().0,
            AuthOp::Login
        );
    }

    #[test]
    fn only_routes_that_may_answer_grpc_are_checked_for_it() {
        let t = Routes::default()
            .route("/custom/{x}", AuthOp::Login)
            .build()
            .unwrap();
        let mut h = HeaderMap::new();
        assert!(
            !t.lookup(&Method::POST, "/api/auth/sign-in/email", &h)
                .unwrap()
                .grpc
        );
        assert!(t.lookup(&Method::POST, "/custom/1", &h).unwrap().grpc);
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        assert!(t.lookup(&Method::POST, "/a.B/Login", &h).unwrap().grpc);
    }

    #[test]
    fn odd_templates_do_not_panic() {
        for t in ["é/a/b", "/é", "", "é", "/{x}é/y", "//"] {
            let _ = Routes::empty().route(t, AuthOp::Login).build();
        }
    }

    #[test]
    fn bad_templates_are_explained() {
        let e = Routes::empty()
            .route("/a/{x}", AuthOp::Login)
            .route("/a/{y}", AuthOp::Login)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("/a/{y}"), "{e}");
        let e = Routes::empty()
            .grpc_method("a/b", AuthOp::Login)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("one path segment"), "{e}");
    }

    #[test]
    fn common_prefix_of_dynamic_templates() {
        let p = |v: &[&str]| {
            let b: Vec<Box<str>> = v.iter().map(|s| (*s).into()).collect();
            common_prefix(&b).to_owned()
        };
        assert_eq!(
            p(&["/api/auth/sign-in/", "/api/auth/callback/"]),
            "/api/auth/"
        );
        assert_eq!(p(&["/a/", "/b/"]), "/");
        assert_eq!(p(&[]), "");
        assert_eq!(p(&["/é/x", "/é/y"]), "/é/");
        assert_eq!(p(&["/éa", "/èa"]), "/");
        let t = Routes::default().build().unwrap();
        assert_eq!(&*t.common_prefix, "/api/auth/");
        // A template with a parameter up front turns the filter off, not the route.
        let t = Routes::default()
            .route("/{tenant}/login", AuthOp::Login)
            .build()
            .unwrap();
        assert_eq!(
            op(&t, Method::POST, "/acme/login").unwrap().0,
            AuthOp::Login
        );
    }

    #[test]
    fn ids_are_dense() {
        let t = Routes::default().build().unwrap();
        for (i, r) in t.routes().iter().enumerate() {
            assert_eq!(usize::from(r.id.0), i);
            assert_eq!(t.get(r.id).unwrap().template, r.template);
        }
    }

    #[test]
    fn hostile_paths() {
        let t = Routes::default().build().unwrap();
        let long = format!("/api/auth/sign-in/{}", "a".repeat(1 << 20));
        assert_eq!(
            op(&t, Method::POST, &long).unwrap().1,
            "/api/auth/sign-in/{*method}"
        );
        assert!(op(&t, Method::POST, &"/".repeat(100_000)).is_none());
        assert!(op(&t, Method::POST, "/api/auth/sign-in/%2e%2e/%00").is_some());
    }
}
