//! What each route is, declared where it is registered: the action the audit log records it as, the class its
//! rate limit counts it in, and whether it looks at API keys. [`ApiRoutes`] takes no route without its
//! [`Policy`], so a new route cannot fall through to a wrong default; the middleware finds a request's policy
//! by its matched route in [`Policies`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::{audit, ratelimit};
use crate::audit::Action;
use crate::ratelimit::RouteClass;
use crate::state::AppState;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// What the audit log records every request as; `None` for reads, recorded only when refused (401/403).
    pub(crate) action: Option<Action>,
    pub(crate) class: RouteClass,
    /// Whether a presented API key is checked before the handler (the key-protected API); a share link works
    /// whatever `Authorization` header comes along.
    pub(crate) identify: bool,
}

impl Policy {
    /// A read of the key-protected API.
    pub(crate) const fn read() -> Self {
        Policy { action: None, class: RouteClass::Api, identify: true }
    }

    /// A change (or download) of the key-protected API, recorded whatever its outcome.
    pub(crate) const fn recorded(action: Action) -> Self {
        Policy { action: Some(action), class: RouteClass::Api, identify: true }
    }

    /// Counted in another rate class than `api`.
    pub(crate) const fn limited_as(self, class: RouteClass) -> Self {
        Policy { class, ..self }
    }

    /// Served without looking at keys.
    pub(crate) const fn keyless(self) -> Self {
        Policy { identify: false, ..self }
    }
}

/// Every guarded route's policy, by path template and method, as [`ApiRoutes`] registered them.
#[derive(Debug, Default)]
pub(crate) struct Policies(HashMap<String, Vec<(Method, Policy)>>);

impl Policies {
    /// The policy of a request to `route` (a path template, as routing matched it). A method the route does not
    /// have is answered 405 by routing; it is treated as a read.
    pub(crate) fn of(&self, method: &Method, route: &str) -> Policy {
        self.get(method, route).unwrap_or(Policy::read())
    }

    /// The policy `route` was registered with for `method`, if it was.
    pub(crate) fn get(&self, method: &Method, route: &str) -> Option<Policy> {
        let method = if method == Method::HEAD { &Method::GET } else { method };
        self.0.get(route).and_then(|methods| methods.iter().find(|(m, _)| m == method)).map(|(_, policy)| *policy)
    }
}

/// What the audit and rate-limit middleware work with: the application and the routes' policies.
#[derive(Clone)]
pub(crate) struct Governed {
    pub(crate) state: AppState,
    pub(crate) policies: Arc<Policies>,
}

/// The guarded routes' middleware: one layer, the steps in the order they must run. The client's address comes
/// first (authentication counts refusals by it), then the caller (the record and the rate limit need it), then
/// the request runs under its rate limit, and what it did is recorded.
pub(crate) async fn govern(State(governed): State<Governed>, mut request: Request, next: Next) -> Response {
    let state = &governed.state;
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or_default();
    let policy = governed.policies.of(request.method(), route);
    audit::resolve_client(state, &mut request);
    let request = match audit::identify(state, policy, request).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let origin = audit::Origin::of(request.uri(), request.headers(), request.extensions());
    let response = ratelimit::limit(state, policy.class, request, next).await;
    if let Some(event) = audit::event_of(policy, origin, &response) {
        state.audit.record(event).await;
    }
    response
}

/// The guarded routes, each registered with its policy.
pub(crate) struct ApiRoutes {
    router: OpenApiRouter<AppState>,
    policies: Policies,
}

impl ApiRoutes {
    pub(crate) fn new(router: OpenApiRouter<AppState>) -> Self {
        Self { router, policies: Policies::default() }
    }

    /// Registers `routes` (one handler, or several on one path sharing the policy) under `policy`.
    pub(crate) fn route(mut self, policy: Policy, routes: UtoipaMethodRouter<AppState>) -> Self {
        for (path, item) in &routes.1.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            let methods = self.policies.0.entry(path.clone()).or_default();
            for (method, operation) in operations {
                if operation.is_some() {
                    assert!(!methods.iter().any(|(m, _)| *m == method), "{method} {path} is registered twice");
                    methods.push((method, policy));
                }
            }
        }
        Self { router: self.router.routes(routes), policies: self.policies }
    }

    pub(crate) fn into_parts(self) -> (OpenApiRouter<AppState>, Policies) {
        (self.router, self.policies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_its_routes_policy_and_head_is_a_get() {
        let download = Policy::recorded(Action::FileDownload).limited_as(RouteClass::Download);
        let policies = Policies([("/api/v1/files/{id}/content".to_owned(), vec![(Method::GET, download)])].into());
        let head = policies.of(&Method::HEAD, "/api/v1/files/{id}/content");
        assert_eq!((head.action, head.class, head.identify), (Some(Action::FileDownload), RouteClass::Download, true));
        // A method the route does not have is answered 405 by routing, as a read.
        assert_eq!(policies.of(&Method::POST, "/api/v1/files/{id}/content").action, None);
    }
}
