//! `/auth/stats` (the in-process view as JSON) and `/auth/dashboard` (one self-contained HTML
//! page that charts it live, no CDN, no Grafana).

use std::convert::Infallible;
use std::future::{ready, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::endpoints::{authorized, not_allowed, unauthorized, uncached, EndpointBody};
use crate::stats::Latency;
use crate::AuthWatch;

/// The dashboard page.
const PAGE: &str = include_str!("dashboard.html");

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        json!((d.as_secs_f64() * 1e6).round() / 1e3)
    })
}

fn latency(l: &Latency) -> Value {
    json!({
        "count": l.count,
        "p50_ms": ms(l.p50),
        "p95_ms": ms(l.p95),
        "p99_ms": ms(l.p99),
        "mean_ms": ms(l.mean),
        "max_ms": ms(l.max),
    })
}

/// An account as the dashboard shows it by default: `a***@example.com` for an e-mail, the
/// first 8 hex digits of a keyed hash (`hmac-sha256:1f2e3d4c…`), else its first two characters
/// (`us***`).
fn mask_account(account: &str) -> String {
    if let Some(hash) = account.strip_prefix("hmac-sha256:") {
        return format!("hmac-sha256:{}…", hash.chars().take(8).collect::<String>());
    }
    if let Some((user, domain)) = account.split_once('@') {
        return format!("{}***@{domain}", user.chars().next().unwrap_or('*'));
    }
    format!("{}***", account.chars().take(2).collect::<String>())
}

fn ops_json(s: &crate::Snapshot) -> Vec<Value> {
    s.ops()
        .iter()
        .map(|o| {
            json!({
                "op": o.op.as_str(),
                "success": o.success,
                "failure": o.failure,
                "rate_limited": o.rate_limited,
                "invalid_token": o.invalid_token,
                "errors": o.errors,
                "cancelled": o.cancelled,
                "locked_out": o.locked_out,
                "latency": latency(&o.latency),
            })
        })
        .collect()
}

impl AuthWatch {
    /// The in-process view as the JSON `/auth/stats` serves: counters since start and window
    /// percentiles per operation, the firing alerts, the top offending client addresses (masked
    /// unless [`AuthWatchBuilder::dashboard_unmasked_ips`](crate::AuthWatchBuilder::dashboard_unmasked_ips)),
    /// the last health status, the active-user estimate, the accounts under attack and the
    /// addresses spraying logins over many accounts (`accounts_under_attack`, `spraying_ips`;
    /// masked, `a***@example.com`, unless unmasked), the blocks in force and the requests they
    /// refused (`blocks`), whether the attack-time limit is on (`attack_limit`, `null`
    /// without one), and in fleet mode the instances and the fleet's totals (`fleet`,
    /// `null` without).
    ///
    /// `scope` says whose figures `ops`, `response_time` and `token_validation` are: in fleet
    /// mode the fleet's ([`AuthWatch::fleet_snapshot`]), with this instance's own under
    /// `this_instance`; otherwise this instance's (`"local"`, `this_instance` is `null`).
    #[must_use]
    pub fn stats_json(&self) -> Value {
        let (s, local) = match self.fleet_snapshot() {
            Some(fleet) => (fleet, Some(self.snapshot())),
            None => (self.snapshot(), None),
        };
        let unmask = self.inner.dashboard_unmasked;
        let engine = self.inner.alerts.as_ref();
        let show = |ip: std::net::IpAddr| {
            if unmask {
                engine.map_or_else(|| ip.to_string(), |e| e.client_label(ip))
            } else {
                authwatch_alerts::mask_ip(ip)
            }
        };
        // A label holds `203.0.113.7` or `2001:db8:1:2::/64`.
        let show_label = |label: &str| {
            let addr = label.split_once('/').map_or(label, |(a, _)| a);
            addr.parse().map_or_else(
                |_| label.to_owned(),
                |ip| {
                    if unmask {
                        label.to_owned()
                    } else {
                        authwatch_alerts::mask_ip(ip)
                    }
                },
            )
        };
        let ops = ops_json(&s);
        let alerts: Vec<Value> = s
            .alerts()
            .iter()
            .map(|a| {
                let mut labels = a.labels.clone();
                let mut description = a
                    .annotations
                    .get("description")
                    .cloned()
                    .unwrap_or_default();
                if let Some(ip) = labels.get_mut("client_ip") {
                    let shown = show_label(ip);
                    description = description.replace(ip.as_str(), &shown);
                    *ip = shown;
                }
                json!({
                    "name": a.name,
                    "severity": a.severity.as_str(),
                    "labels": labels,
                    "summary": a.annotations.get("summary"),
                    "description": description,
                    "runbook_url": a.annotations.get("runbook_url"),
                    "value": a.value,
                    "starts_at": humantime::format_rfc3339_seconds(a.starts_at).to_string(),
                })
            })
            .collect();
        let (top_ips, top_failures) = self.inner.alerts.as_ref().map_or((Vec::new(), 0), |e| {
            (
                e.suspects()
                    .iter()
                    .take(20)
                    .map(|x| json!({"ip": show(x.ip), "failures": x.failures}))
                    .collect(),
                e.top_ip_failures(),
            )
        });
        // The account-level detections: accounts under attack and addresses spraying, masked
        // like the addresses unless unmasked.
        let (accounts, spraying) = engine.map_or((Vec::new(), Vec::new()), |e| {
            let d = e.account_detections();
            (
                d.accounts
                    .iter()
                    .take(20)
                    .map(|a| {
                        json!({
                            "account": if unmask { a.account.clone() } else { mask_account(&a.account) },
                            "failures": a.failures,
                            "addresses": a.addresses,
                        })
                    })
                    .collect::<Vec<_>>(),
                d.clients
                    .iter()
                    .take(20)
                    .map(|c| json!({"ip": show(c.ip), "accounts": c.accounts, "failures": c.failures}))
                    .collect::<Vec<_>>(),
            )
        });
        // The headline login failure ratio covers the window of the alert on it.
        let login_window = self
            .inner
            .alerts
            .as_ref()
            .and_then(|e| {
                e.config()
                    .rule_set()
                    .iter()
                    .find(|r| r.name == "AuthLoginFailureRateHigh")
            })
            .and_then(|r| match r.kind {
                authwatch_alerts::RuleKind::FailureRatio { window, .. } => Some(window),
                _ => None,
            })
            .unwrap_or(std::time::Duration::from_secs(300));
        // In fleet mode: the instances and the fleet's totals the rules read (the figures
        // above are this instance's).
        let fleet = self.fleet_status().map(|f| {
            json!({
                "connected": f.connected,
                "errors": f.errors,
                "flushes": f.flushes,
                "mean_flush_ms": (f.flushes > 0)
                    .then(|| f.flush_time.as_secs_f64() * 1e3 / f.flushes as f64),
                "requests": f.requests,
                "failures": f.failures,
                "p95_ms": authwatch_layer::AuthOp::ALL
                    .iter()
                    .map(|op| (op.as_str().to_owned(), ms(f.p95(*op))))
                    .collect::<serde_json::Map<String, Value>>(),
                "instances": f.instances.iter().map(|i| json!({
                    "name": i.name,
                    "this": i.this,
                    "last_flush_ms": u64::try_from(i.last_flush.as_millis()).unwrap_or(u64::MAX),
                })).collect::<Vec<_>>(),
            })
        });
        // The blocks in force (masked like the addresses), and what they refused.
        let block_list: Vec<Value> = self
            .blocked_ips()
            .iter()
            .take(20)
            .map(|b| {
                let ip = if b.ip.is_ipv6() && unmask {
                    format!("{}/{}", b.ip, b.prefix)
                } else {
                    show(b.ip)
                };
                json!({
                    "ip": ip,
                    "source": b.source.as_str(),
                    "reason": b.reason.replace(&b.ip.to_string(), &ip),
                    "remaining_seconds": b.remaining().as_secs(),
                    "refused": b.refused,
                })
            })
            .collect();
        let blocks = json!({
            "active": self.inner.blocker.list().list().len(),
            "dry_run": self.inner.blocker.dry_run(),
            "refused": self.blocked_requests_json(),
            "list": block_list,
        });
        let health = self
            .inner
            .health
            .last()
            .map_or("unknown", |r| r.status.as_str());
        json!({
            "service": self.service_name(),
            "uptime_seconds": self.inner.started.elapsed().as_secs_f64(),
            "at_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "window_seconds": s.window().as_secs_f64(),
            "login_failure_window_seconds": login_window.as_secs_f64(),
            "scope": s.scope().as_str(),
            "ops": ops,
            "this_instance": local.map(|l| json!({
                "ops": ops_json(&l),
                "response_time": latency(l.response_time()),
                "token_validation": latency(l.token_validation_time()),
            })),
            "response_time": latency(s.response_time()),
            "token_validation": latency(s.token_validation_time()),
            "alerts": alerts,
            "top_ips": top_ips,
            "top_ip_failures": top_failures,
            "ips_masked": !unmask,
            "accounts_under_attack": accounts,
            "spraying_ips": spraying,
            "blocks": blocks,
            "attack_limit": self.inner.limiter.as_ref().map(|l| json!({
                "on": l.is_on(),
                "addresses": l.addresses(),
            })),
            "health": health,
            "active_users": self.active_users(),
            "fleet": fleet,
        })
    }
}

/// Serves [`AuthWatch::stats_json`], whatever the path; `GET`/`HEAD`; protected by the
/// `/metrics` bearer token when one is set (as a header, or `?token=` for the dashboard page).
#[derive(Clone, Debug)]
pub struct StatsService {
    pub(crate) watch: AuthWatch,
}

/// Serves the dashboard page, whatever the path; `GET`/`HEAD`; protected like [`StatsService`].
#[derive(Clone, Debug)]
pub struct DashboardService {
    pub(crate) watch: AuthWatch,
}

fn gate<B>(
    watch: &AuthWatch,
    endpoint: &'static str,
    req: &Request<B>,
) -> Option<Response<EndpointBody>> {
    if !(req.method() == Method::GET || req.method() == Method::HEAD) {
        return Some(not_allowed());
    }
    let allowed = authorized(watch, req, true);
    watch.note_access(endpoint, req, allowed);
    if !allowed {
        return Some(unauthorized());
    }
    None
}

impl<B> tower_service::Service<Request<B>> for StatsService {
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(r) = gate(&self.watch, "/auth/stats", &req) {
            return Box::pin(ready(Ok(r)));
        }
        let (watch, head) = (self.watch.clone(), req.method() == Method::HEAD);
        Box::pin(async move {
            // The HDR merges and the sketch reads are CPU work: off the async workers.
            let body = tokio::task::spawn_blocking(move || watch.stats_json().to_string())
                .await
                .unwrap_or_else(|_| "{}".to_owned());
            Ok(uncached(StatusCode::OK, "application/json", body, head))
        })
    }
}

impl<B> tower_service::Service<Request<B>> for DashboardService {
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(r) = gate(&self.watch, "/auth/dashboard", &req) {
            return ready(Ok(r));
        }
        let mut r = uncached(
            StatusCode::OK,
            "text/html; charset=utf-8",
            PAGE.to_owned(),
            req.method() == Method::HEAD,
        );
        // The page loads nothing from elsewhere, runs only its own inline script, cannot be
        // framed, and sends no referrer (its URL may hold the token).
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        ready(Ok(r))
    }
}
