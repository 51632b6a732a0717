//! A browser's part in the web console, for HTTP-level tests: it keeps the cookies the server
//! sets, sends them back, and fills in each form's CSRF token from the last page it loaded.

use std::collections::BTreeMap;

use hyper::header::{HeaderMap, LOCATION, SET_COOKIE};

use super::Client;

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

    /// A new browser that signed in with `token`; panics unless the console took it.
    pub async fn signed_in(client: &Client, token: &str) -> Browser {
        let mut browser = Browser::new(client);
        let answer = browser.sign_in(token).await;
        assert_eq!(answer.status, 303, "sign-in refused: {}", answer.body);
        assert_eq!(answer.location(), Some("/console/users"));
        let users = browser.get("/console/users").await;
        assert_eq!(users.status, 200, "{}", users.body);
        browser
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

    /// A request with these form fields and extra headers (such as `Origin`), cookies added.
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
        let mut headers = extra.to_vec();
        if !cookie.is_empty() {
            headers.push(("cookie", &cookie));
        }
        if method == "POST" {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
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
