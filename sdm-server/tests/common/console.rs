//! A browser's part in the web console, for HTTP-level tests: it keeps the cookies the server
//! sets, sends them back, says that each request comes from the console itself (`Origin`,
//! `Sec-Fetch-Site: same-origin`, as a browser does), and fills in each form's CSRF token from
//! the last page it loaded (or from the page a form is posted from).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use hyper::header::{HeaderMap, LOCATION, SET_COOKIE};

use super::Client;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "__Host-sdm-console";

/// A console page as the browser received it.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Where a redirect points.
    pub fn location(&self) -> Option<&str> {
        self.header(LOCATION.as_str())
    }

    /// Every `Set-Cookie` line.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The value of the first `<input … name="NAME" … value="…">` on the page.
    pub fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\"");
        let at = self.body.find(&marker)?;
        let tag_start = self.body[..at].rfind('<')?;
        let tag_end = at + self.body[at..].find('>')?;
        let tag = &self.body[tag_start..tag_end];
        let value = tag.split_once("value=\"")?.1;
        Some(value[..value.find('"')?].to_owned())
    }

    /// The `csrf` hidden field of the page's forms; panics if there is none.
    #[track_caller]
    pub fn csrf(&self) -> String {
        self.field("csrf")
            .unwrap_or_else(|| panic!("the page has no csrf field: {}", self.body))
    }

    /// Asserts that the page is a 200 and gives it back.
    #[track_caller]
    pub fn ok(self) -> Page {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }

    /// Asserts that the page is a 303 to `to`.
    #[track_caller]
    pub fn redirects_to(&self, to: &str) {
        assert_eq!(self.status, 303, "{}", self.body);
        assert_eq!(self.location(), Some(to));
    }

    /// How many times `needle` occurs in the page.
    pub fn count(&self, needle: &str) -> usize {
        self.body.matches(needle).count()
    }

    /// The `href` of the link whose text is `text`, as a path (`&amp;` and `&#38;` read back as
    /// `&`, as a browser reads them).
    pub fn link(&self, text: &str) -> Option<String> {
        let end = self.body.find(&format!("\">{text}</a>"))?;
        let start = self.body[..end].rfind("href=\"")? + "href=\"".len();
        Some(
            self.body[start..end]
                .replace("&amp;", "&")
                .replace("&#38;", "&"),
        )
    }

    /// The message beside `field` (`<p id="{field}-error" role="alert">`), asserting that the
    /// field is marked invalid and points at it.
    #[track_caller]
    pub fn error_beside(&self, field: &str) -> String {
        self.error_of(&[field], &format!("{field}-error"))
    }

    /// The alert `id`, asserting that each of `controls` is marked invalid and points at it.
    #[track_caller]
    pub fn error_of(&self, controls: &[&str], id: &str) -> String {
        let open = format!("<p id=\"{id}\" class=\"error\" role=\"alert\">");
        let at = self
            .body
            .find(&open)
            .unwrap_or_else(|| panic!("no alert {id}: {}", self.body))
            + open.len();
        let end = self.body[at..].find("</p>").unwrap();
        for control in controls {
            let tag = self.control(control);
            assert!(tag.contains("aria-invalid=\"true\""), "{tag}");
            assert!(
                tag.contains("aria-describedby=\"") && tag.contains(id),
                "{tag}"
            );
        }
        self.body[at..at + end].to_owned()
    }

    /// The opening tag of the control with id `id`.
    #[track_caller]
    pub fn control(&self, id: &str) -> &str {
        let at = self
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no control {id}"));
        let start = self.body[..at].rfind('<').unwrap();
        let end = at + self.body[at..].find('>').unwrap();
        &self.body[start..=end]
    }
}

/// A browser session with the console.
pub struct Browser {
    client: Client,
    /// Cookie name → value, as a browser keeps them.
    pub cookies: BTreeMap<String, String>,
    /// The CSRF token of the last page that had one.
    pub csrf: Option<String>,
}

impl Browser {
    pub fn new(client: &Client) -> Browser {
        Browser {
            client: client.clone(),
            cookies: BTreeMap::new(),
            csrf: None,
        }
    }

    /// A browser for the console at `addr`, trusting only `<data_dir>/ca.pem` (for a test
    /// without a `TestServer`).
    pub fn at(data_dir: &Path, addr: SocketAddr) -> Browser {
        Browser::new(&Client::new(data_dir, addr))
    }

    /// A new browser that signed in with `token`; panics unless the console took it and set
    /// the session cookie.
    pub async fn signed_in(client: &Client, token: &str) -> Browser {
        let mut browser = Browser::new(client);
        let answer = browser.sign_in(token).await;
        assert_eq!(answer.status, 303, "sign-in refused: {}", answer.body);
        assert_eq!(answer.location(), Some("/console/users"));
        assert!(
            answer
                .set_cookies()
                .iter()
                .any(|c| c.starts_with(&format!("{SESSION_COOKIE}="))),
            "sign-in sets no session cookie: {:?}",
            answer.set_cookies()
        );
        assert!(browser.cookies.contains_key(SESSION_COOKIE));
        let users = browser.get("/console/users").await;
        assert_eq!(users.status, 200, "{}", users.body);
        browser
    }

    /// [`signed_in`](Self::signed_in) at the console at `addr`, trusting only
    /// `<data_dir>/ca.pem`.
    pub async fn signed_in_at(data_dir: &Path, addr: SocketAddr, token: &str) -> Browser {
        Browser::signed_in(&Client::new(data_dir, addr), token).await
    }

    /// Posts the sign-in form.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        self.send("POST", "/console/sign-in", &[("token", token)], &[])
            .await
    }

    /// Loads a page (no redirect followed).
    pub async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, &[], &[]).await
    }

    /// Posts a form with the current CSRF token added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self
            .csrf
            .clone()
            .expect("no page with a CSRF token was loaded");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send("POST", path, &all, &[]).await
    }

    /// Loads `from`, then posts `fields` to `to` with that page's CSRF token, as a browser
    /// sends a form from the page that shows it.
    pub async fn post_from(&mut self, from: &str, to: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send("POST", to, &all, &[]).await
    }

    /// A request with these form fields, sent as a browser sends it from the console's own
    /// pages: `Origin` and `Sec-Fetch-Site: same-origin`, the cookies, and a form's
    /// `Content-Type`. Each of `extra` (such as a forged `Origin`) replaces the header of that
    /// name, or is added.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let body = serde_urlencoded::to_string(fields).unwrap();
        let origin = format!("https://{}", self.client.addr);
        let mut headers = vec![
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        if !cookie.is_empty() {
            headers.push(("cookie", &cookie));
        }
        if method == "POST" {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        headers.retain(|(name, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(name)));
        headers.extend_from_slice(extra);
        let response = self
            .client
            .exchange(method, path, &headers, body.into_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (parts, body) = response.into_parts();
        let page = Page {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        self.keep_cookies(&page);
        if let Some(csrf) = page.field("csrf") {
            self.csrf = Some(csrf);
        }
        page
    }

    fn keep_cookies(&mut self, page: &Page) {
        for line in page.set_cookies() {
            let pair = line.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let removed = line.contains("Max-Age=0") || value.is_empty();
            if removed {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }
}
