//! Who may read the dashboard: loopback by default; anywhere else only with a token,
//! which every request must then carry.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// The shortest token accepted: a short one can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The cookie a browser keeps the token in after `?token=`.
const COOKIE: &str = "labelfleet_token";

/// The secret requests must carry.
#[derive(Clone)]
pub struct Token(String);

/// Checks the bind address against the token: loopback needs none (a token given is
/// still required of every request); any other address refuses to start without one.
/// The error says what to do and never repeats the token.
pub fn check_bind(bind: SocketAddr, token: Option<&str>) -> Result<Option<Token>, String> {
    match token {
        Some(t) if t.chars().count() < MIN_TOKEN_CHARS => Err(format!(
            "the token (--token or LABELFLEET_SERVE_TOKEN) is too short: use at least {MIN_TOKEN_CHARS} characters, \
             for example from `openssl rand -hex 16`"
        )),
        Some(t) if !t.chars().all(token_char) => Err(
            "the token (--token or LABELFLEET_SERVE_TOKEN) may hold letters, digits and - _ . ~ + / = only".into(),
        ),
        Some(t) => Ok(Some(Token(t.to_string()))),
        None if bind.ip().is_loopback() => Ok(None),
        None => Err(format!(
            "refusing to serve on {bind} without a token: anyone who can reach it could read the fleet's jobs and labels. \
             Give --token (or LABELFLEET_SERVE_TOKEN), or bind to 127.0.0.1"
        )),
    }
}

/// Characters a token may hold: those of hex, base64 and URL-safe base64, which a
/// header, a query and a cookie all carry unchanged.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.~+/=".contains(c)
}

/// Compares in time that does not depend on where the texts differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: a bearer header, a cookie, or `token=` in the query.
/// Also says whether it came in the query (the response then sets the cookie).
fn carried(headers: &HeaderMap, query: Option<&str>) -> Option<(String, bool)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| (t.trim().to_string(), false));
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .map(|t| (t.to_string(), false))
    };
    let in_query = || {
        form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| (v.into_owned(), true))
    };
    bearer.or_else(cookie).or_else(in_query)
}

async fn require(token: Token, request: Request, next: Next) -> Response {
    let Some((given, from_query)) = carried(request.headers(), request.uri().query()) else {
        return refuse(
            "this server needs a token: send `Authorization: Bearer TOKEN`, or open a page once with ?token=TOKEN",
        );
    };
    if !same(given.as_bytes(), token.0.as_bytes()) {
        return refuse("the token is wrong");
    }
    let mut response = next.run(request).await;
    if from_query
        && let Ok(cookie) = HeaderValue::from_str(&format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            token.0
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn refuse(message: &'static str) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"labelfleet\""),
    );
    response
}

/// Headers every response carries: pages come from this server only, run no script
/// but their own inline few lines, and are never framed or sniffed as another type.
async fn harden(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `routes` behind the token check, when there is a token, and the security headers.
pub fn guard(routes: Router, token: Option<Token>) -> Router {
    let routes = match token {
        Some(token) => routes.layer(middleware::from_fn(move |request, next| {
            require(token.clone(), request, next)
        })),
        None => routes,
    };
    routes.layer(middleware::from_fn(harden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_token_and_anything_else_does() {
        let loopback: SocketAddr = "127.0.0.1:8686".parse().unwrap();
        let v6: SocketAddr = "[::1]:8686".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:8686".parse().unwrap();
        assert!(check_bind(loopback, None).unwrap().is_none());
        assert!(check_bind(v6, None).unwrap().is_none());
        let refused = check_bind(open, None).err().unwrap();
        assert!(refused.contains("--token"), "{refused}");
        assert!(
            check_bind(open, Some("0123456789abcdef"))
                .unwrap()
                .is_some()
        );
        let short = check_bind(open, Some("secret")).err().unwrap();
        assert!(
            !short.contains("secret`") && short.contains("16"),
            "{short}"
        );
        assert!(check_bind(loopback, Some("0123456789 abcdef")).is_err());
    }

    #[test]
    fn a_token_comes_from_a_header_a_cookie_or_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(carried(&headers, None), None);
        assert_eq!(
            carried(&headers, Some("dialogue=x&token=abc%2Bd")),
            Some(("abc+d".into(), true))
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; labelfleet_token=fromcookie"),
        );
        assert_eq!(
            carried(&headers, Some("token=q")),
            Some(("fromcookie".into(), false))
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer fromheader"),
        );
        assert_eq!(carried(&headers, None), Some(("fromheader".into(), false)));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
