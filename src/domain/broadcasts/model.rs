//! The template model shared by every surface: a template's language variants with their
//! header, body, footer and buttons, and the checks a variant passes before it is stored.
//! Stored as one JSON document per template (`storage::templates`).

use serde::{Deserialize, Serialize};

use crate::domain::text::no_nul;
use crate::error::{Error, Result};

/// Language variants one template may have.
pub const MAX_VARIANTS: usize = 20;
/// Positional variables one body may use (`{{1}}` … `{{100}}`).
pub const MAX_VARIABLES: usize = 100;
/// Buttons one variant may have.
pub const MAX_BUTTONS: usize = 10;
const MAX_NAME: usize = 512;
const MAX_CATEGORY: usize = 64;
const MAX_LANGUAGE: usize = 16;
const MAX_BODY: usize = 4096;
const MAX_SHORT: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HeaderFormat {
    Text,
    Image,
    Video,
    Document,
}

impl HeaderFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TEXT" => Ok(HeaderFormat::Text),
            "IMAGE" => Ok(HeaderFormat::Image),
            "VIDEO" => Ok(HeaderFormat::Video),
            "DOCUMENT" => Ok(HeaderFormat::Document),
            _ => Err(Error::InvalidTemplate(format!(
                "header format {s:?} is not TEXT, IMAGE, VIDEO or DOCUMENT"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HeaderFormat::Text => "TEXT",
            HeaderFormat::Image => "IMAGE",
            HeaderFormat::Video => "VIDEO",
            HeaderFormat::Document => "DOCUMENT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: HeaderFormat,
    /// TEXT headers: the text, with `{{n}}` variables.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Media headers: an example (or default) URL of the media, used when a send names none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ButtonKind {
    Url,
    PhoneNumber,
    QuickReply,
    /// A one-time-password copy code.
    Otp,
}

impl ButtonKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "URL" => Ok(ButtonKind::Url),
            "PHONE_NUMBER" => Ok(ButtonKind::PhoneNumber),
            "QUICK_REPLY" => Ok(ButtonKind::QuickReply),
            "OTP" | "COPY_CODE" => Ok(ButtonKind::Otp),
            _ => Err(Error::InvalidTemplate(format!(
                "button type {s:?} is not URL, PHONE_NUMBER, QUICK_REPLY or OTP"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ButtonKind::Url => "URL",
            ButtonKind::PhoneNumber => "PHONE_NUMBER",
            ButtonKind::QuickReply => "QUICK_REPLY",
            ButtonKind::Otp => "OTP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    #[serde(rename = "type")]
    pub kind: ButtonKind,
    pub text: String,
    /// URL buttons: the link, which may end with `{{1}}` (a suffix given at send time).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// PHONE_NUMBER buttons.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phone_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    pub body: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub footer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
}

/// What a template says, as given to create or update it.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub name: String,
    pub category: String,
    pub variants: Vec<Variant>,
}

/// The highest `{{n}}` of `text`, after checking that its variables are exactly `{{1}}` …
/// `{{n}}` (each at least once, none skipped).
pub fn variable_count(what: &str, text: &str) -> Result<usize> {
    let mut seen = [false; MAX_VARIABLES + 1];
    let mut max = 0;
    for n in placeholders(text) {
        let Some(n) = n.filter(|n| (1..=MAX_VARIABLES).contains(n)) else {
            return Err(Error::InvalidTemplate(format!(
                "{what}: variables are {{{{1}}}} to {{{{{MAX_VARIABLES}}}}}"
            )));
        };
        seen[n] = true;
        max = max.max(n);
    }
    if let Some(gap) = (1..=max).find(|&i| !seen[i]) {
        return Err(Error::InvalidTemplate(format!(
            "{what}: variable {{{{{gap}}}}} is missing (variables are numbered from 1 without gaps)"
        )));
    }
    Ok(max)
}

/// Every `{{…}}` of `text`: `Some(n)` for a number, `None` for anything else.
pub(super) fn placeholders(text: &str) -> impl Iterator<Item = Option<usize>> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find("{{")?;
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            rest = "";
            return None;
        };
        let inner = after[..end].trim();
        rest = &after[end + 2..];
        Some(inner.parse::<usize>().ok())
    })
}

fn bounded(what: &str, value: &str, max: usize) -> Result<()> {
    no_nul(what, value)?;
    if value.chars().count() > max {
        return Err(Error::InvalidTemplate(format!(
            "{what} is longer than {max} characters"
        )));
    }
    Ok(())
}

fn http_url(what: &str, url: &str) -> Result<()> {
    let probe = url.replace("{{1}}", "x");
    match url::Url::parse(&probe) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(Error::InvalidTemplate(format!(
            "{what} must be an absolute http(s) URL"
        ))),
    }
}

impl TemplateSpec {
    /// Checks everything a template must satisfy to be stored, and normalizes what has one
    /// spelling (category upper case, trimmed names).
    pub fn validated(mut self) -> Result<Self> {
        self.name = self.name.trim().to_owned();
        self.category = self.category.trim().to_ascii_uppercase();
        if self.name.is_empty() {
            return Err(Error::InvalidTemplate("name is required".into()));
        }
        bounded("name", &self.name, MAX_NAME)?;
        if self.category.is_empty() {
            return Err(Error::InvalidTemplate("category is required".into()));
        }
        bounded("category", &self.category, MAX_CATEGORY)?;
        if self.variants.is_empty() || self.variants.len() > MAX_VARIANTS {
            return Err(Error::InvalidTemplate(format!(
                "a template has 1 to {MAX_VARIANTS} language variants"
            )));
        }
        let mut languages = std::collections::HashSet::new();
        for v in &mut self.variants {
            v.language = v.language.trim().to_owned();
            if !languages.insert(v.language.to_ascii_lowercase()) {
                return Err(Error::InvalidTemplate(format!(
                    "language {:?} is given twice",
                    v.language
                )));
            }
            v.check()?;
        }
        Ok(self)
    }
}

impl Variant {
    fn check(&self) -> Result<()> {
        let lang = &self.language;
        if lang.is_empty() {
            return Err(Error::InvalidTemplate("language is required".into()));
        }
        bounded("language", lang, MAX_LANGUAGE)?;
        if self.body.trim().is_empty() {
            return Err(Error::InvalidTemplate(format!("{lang}: body is required")));
        }
        bounded("body", &self.body, MAX_BODY)?;
        variable_count(&format!("{lang} body"), &self.body)?;
        if let Some(h) = &self.header {
            bounded("header text", &h.text, MAX_SHORT)?;
            bounded("header media url", &h.media_url, MAX_SHORT)?;
            match h.format {
                HeaderFormat::Text => {
                    if h.text.trim().is_empty() {
                        return Err(Error::InvalidTemplate(format!(
                            "{lang}: a TEXT header needs its text"
                        )));
                    }
                    variable_count(&format!("{lang} header"), &h.text)?;
                }
                _ if !h.media_url.is_empty() => http_url("header media url", &h.media_url)?,
                _ => {}
            }
        }
        bounded("footer", &self.footer, MAX_SHORT)?;
        if placeholders(&self.footer).next().is_some() {
            return Err(Error::InvalidTemplate(format!(
                "{lang}: a footer has no variables"
            )));
        }
        if self.buttons.len() > MAX_BUTTONS {
            return Err(Error::InvalidTemplate(format!(
                "{lang}: at most {MAX_BUTTONS} buttons"
            )));
        }
        for (i, b) in self.buttons.iter().enumerate() {
            let what = format!("{lang} button {i}");
            bounded(&what, &b.text, MAX_SHORT)?;
            bounded(&what, &b.url, MAX_SHORT)?;
            bounded(&what, &b.phone_number, 32)?;
            if b.text.trim().is_empty() {
                return Err(Error::InvalidTemplate(format!("{what}: text is required")));
            }
            match b.kind {
                ButtonKind::Url => {
                    http_url(&format!("{what} url"), &b.url)?;
                    let vars = placeholders(&b.url).count();
                    if vars > 1 || (vars == 1 && !b.url.ends_with("{{1}}")) {
                        return Err(Error::InvalidTemplate(format!(
                            "{what}: a URL may only end with {{{{1}}}}"
                        )));
                    }
                }
                ButtonKind::PhoneNumber => {
                    let digits = b.phone_number.trim_start_matches('+');
                    if digits.len() < 8
                        || digits.len() > 15
                        || !digits.bytes().all(|c| c.is_ascii_digit())
                    {
                        return Err(Error::InvalidTemplate(format!(
                            "{what}: phone_number must be 8 to 15 digits with country code"
                        )));
                    }
                }
                ButtonKind::QuickReply | ButtonKind::Otp => {}
            }
        }
        Ok(())
    }
}

/// The variant for `language`: the same code, else the same primary language (`id` for
/// `id_ID`, `en_US` for `en`), else the template's first one (clients such as Mekari's own
/// SDK send `id` for an `en_US` template).
pub fn pick<'a>(variants: &'a [Variant], language: &str) -> Option<&'a Variant> {
    let norm = |s: &str| s.trim().replace('-', "_").to_ascii_lowercase();
    let want = norm(language);
    let primary = |s: &str| norm(s).split('_').next().unwrap_or_default().to_owned();
    variants
        .iter()
        .find(|v| norm(&v.language) == want)
        .or_else(|| {
            variants
                .iter()
                .find(|v| !want.is_empty() && primary(&v.language) == primary(&want))
        })
        .or_else(|| variants.first())
}
