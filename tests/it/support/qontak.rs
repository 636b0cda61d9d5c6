//! A Qontak client as Mekari's own SDK behaves on the wire (qontak-api-js, as probed in the
//! reference): `Authorization: hmac username="<client id>", algorithm="hmac-sha256",
//! headers="date request-line", signature="<base64>"` with a `toUTCString()` Date, over
//! `date: <Date>\n<METHOD> <target> HTTP/1.1`, where the target is the path plus the query
//! *form-decoded* (the SDK percent-decodes what it signs, while axios sends it encoded). The
//! body is never signed.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

use super::{TestApp, TestProject, read};

pub struct Qontak<'a> {
    pub t: &'a TestApp,
    pub client_id: String,
    pub secret: String,
}

/// `+` as a space, then percent-decoded: what the SDK signs of a query string.
fn form_decoded(query: &str) -> String {
    let plus = query.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

impl<'a> Qontak<'a> {
    pub fn new(t: &'a TestApp, p: &TestProject) -> Self {
        Qontak {
            t,
            client_id: p.api_key.clone(),
            secret: p.api_secret.clone(),
        }
    }

    /// The Authorization value for `method` and the wire `path_and_query`.
    pub fn authorization(&self, date: &str, method: &str, path_and_query: &str) -> String {
        let target = match path_and_query.split_once('?') {
            Some((path, query)) => format!("{path}?{}", form_decoded(query)),
            None => path_and_query.to_owned(),
        };
        let signing = format!("date: {date}\n{method} {target} HTTP/1.1");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(signing.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!(
            r#"hmac username="{}", algorithm="hmac-sha256", headers="date request-line", signature="{sig}""#,
            self.client_id
        )
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let auth = self.authorization(&date, method.as_str(), path_and_query);
        self.t
            .http
            .request(method, self.t.url(path_and_query))
            .header("Date", date)
            .header("Authorization", auth)
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        read(
            self.request(reqwest::Method::GET, path_and_query)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        read(
            self.request(reqwest::Method::POST, path)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// Asserts Qontak's error envelope with `status` and wagate's stable code in `error.name`.
pub fn assert_qontak_error(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["status"], "error", "{}", got.1);
    assert_eq!(got.1["error"]["code"], status, "{}", got.1);
    assert_eq!(got.1["error"]["name"], code, "{}", got.1);
    assert!(
        got.1["error"]["messages"][0]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}
