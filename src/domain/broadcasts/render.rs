//! Rendering a template variant into the one ordinary WhatsApp message that is sent for it.
//! Interactive buttons are unreliable on linked devices, so everything becomes text:
//!
//! ```text
//! *Header text*            a TEXT header, bold, as the first line
//!
//! Body with {{1}} filled
//!
//! 123456                   an OTP button's code, on a line of its own
//!
//! Visit: https://x.y/abc   URL and phone buttons as `Text: link` lines
//! Call us: +6281234567890
//!
//! 1. Yes                   quick replies as numbered options
//! 2. No
//!
//! _Footer_                 the footer, italic, as the last line
//! ```
//!
//! A media header (IMAGE, VIDEO, DOCUMENT) makes the message that media, with this text as
//! its caption. Values are put in as given, once: a value that itself contains `{{1}}` is not
//! filled again.

use std::collections::BTreeMap;

use super::model::{ButtonKind, HeaderFormat, Variant, placeholders, variable_count};
use crate::domain::text::no_nul;
use crate::error::{Error, Result};

/// Longest value one variable takes.
const MAX_VALUE: usize = 4096;

/// What a send fills a template with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// Body values, `{{1}}` first.
    pub body: Vec<String>,
    /// TEXT header values, `{{1}}` first.
    pub header: Vec<String>,
    /// By button index: a URL button's `{{1}}` suffix, or an OTP button's code.
    pub buttons: BTreeMap<usize, String>,
    /// A media header's URL and file name (else the template's media URL).
    pub media_url: String,
    pub filename: String,
}

/// The media of a media header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaHeader {
    pub format: HeaderFormat,
    pub url: String,
    pub filename: String,
}

/// The message that will be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The language of the variant used.
    pub language: String,
    /// The text, or the media's caption.
    pub text: String,
    pub media: Option<MediaHeader>,
}

fn fill(text: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let value = after[..end]
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| values.get(i));
        out.push_str(&rest[..start]);
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// One line wrapped in a WhatsApp style marker (`*bold*`, `_italic_`): the markers only work
/// around text that does not start or end with a space, on one line.
fn styled(marker: char, text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{marker}{line}{marker}")
}

fn checked_values(what: &str, values: &[String]) -> Result<()> {
    for v in values {
        no_nul(what, v)?;
        if v.chars().count() > MAX_VALUE {
            return Err(Error::InvalidRequest(format!(
                "a {what} value is longer than {MAX_VALUE} characters"
            )));
        }
    }
    Ok(())
}

/// Renders `variant` with `params`. The body takes exactly as many values as it has
/// variables (Qontak's 422 otherwise), and so does a TEXT header.
pub fn render(variant: &Variant, params: &Params) -> Result<Rendered> {
    checked_values("body parameter", &params.body)?;
    checked_values("header parameter", &params.header)?;
    for v in params.buttons.values() {
        checked_values("button parameter", std::slice::from_ref(v))?;
    }
    let wanted = variable_count("body", &variant.body)?;
    if params.body.len() != wanted {
        return Err(Error::TemplateVariables(wanted));
    }
    let mut blocks: Vec<String> = Vec::new();
    let mut media = None;
    if let Some(h) = &variant.header {
        match h.format {
            HeaderFormat::Text => {
                let wanted = variable_count("header", &h.text)?;
                if params.header.len() != wanted {
                    return Err(Error::InvalidRequest(format!(
                        "the template's header has {wanted} variable(s), {} given",
                        params.header.len()
                    )));
                }
                blocks.push(styled('*', &fill(&h.text, &params.header)));
            }
            format => {
                let url = if params.media_url.is_empty() {
                    &h.media_url
                } else {
                    &params.media_url
                };
                if url.is_empty() {
                    return Err(Error::InvalidRequest(format!(
                        "the template's {} header needs a media url",
                        format.as_str()
                    )));
                }
                media = Some(MediaHeader {
                    format,
                    url: url.clone(),
                    filename: params.filename.clone(),
                });
            }
        }
    }
    blocks.push(fill(&variant.body, &params.body).trim().to_owned());

    let (mut codes, mut links, mut replies) = (Vec::new(), Vec::new(), Vec::new());
    for (i, b) in variant.buttons.iter().enumerate() {
        let value = params.buttons.get(&i);
        match b.kind {
            ButtonKind::Otp => {
                // The code is the button's value, else the body's first value (Qontak clients
                // pass it as both).
                let code = value.or(params.body.first()).ok_or_else(|| {
                    Error::InvalidRequest(format!("button {i} (OTP) needs its code"))
                })?;
                codes.push(code.trim().to_owned());
            }
            ButtonKind::Url => {
                let url = if placeholders(&b.url).next().is_some() {
                    let suffix = value.ok_or_else(|| {
                        Error::InvalidRequest(format!(
                            "button {i} needs a value for its URL's {{{{1}}}}"
                        ))
                    })?;
                    fill(&b.url, std::slice::from_ref(suffix))
                } else {
                    b.url.clone()
                };
                links.push(format!("{}: {url}", b.text.trim()));
            }
            ButtonKind::PhoneNumber => {
                let digits = b.phone_number.trim().trim_start_matches('+');
                links.push(format!("{}: +{digits}", b.text.trim()));
            }
            ButtonKind::QuickReply => {
                replies.push(format!("{}. {}", replies.len() + 1, b.text.trim()));
            }
        }
    }
    for group in [codes, links, replies] {
        if !group.is_empty() {
            blocks.push(group.join("\n"));
        }
    }
    if !variant.footer.trim().is_empty() {
        blocks.push(styled('_', &variant.footer));
    }
    Ok(Rendered {
        language: variant.language.clone(),
        text: blocks.join("\n\n"),
        media,
    })
}

#[cfg(test)]
mod tests {
    use super::super::model::{Button, Header};
    use super::*;

    fn variant(body: &str) -> Variant {
        Variant {
            language: "id".into(),
            header: None,
            body: body.into(),
            footer: String::new(),
            buttons: Vec::new(),
        }
    }

    fn button(kind: ButtonKind, text: &str) -> Button {
        Button {
            kind,
            text: text.into(),
            url: String::new(),
            phone_number: String::new(),
        }
    }

    fn body(values: &[&str]) -> Params {
        Params {
            body: values.iter().map(|s| s.to_string()).collect(),
            ..Params::default()
        }
    }

    #[test]
    fn body_variables_are_filled_in_place_and_once() {
        let v = variant("Hi {{1}}, your order {{2}} ships today. Bye {{1}}!");
        let r = render(&v, &body(&["Ana", "{{1}}"])).unwrap();
        assert_eq!(r.text, "Hi Ana, your order {{1}} ships today. Bye Ana!");
        assert_eq!(r.media, None);
    }

    #[test]
    fn a_wrong_number_of_values_is_qontaks_422() {
        let v = variant("Hi {{1}} {{2}} {{3}} {{4}}");
        let e = render(&v, &body(&["a"])).unwrap_err();
        assert_eq!(e.code(), "TEMPLATE_VARIABLES_MISMATCH");
        assert_eq!(e.kind().http_status(), 422);
        assert_eq!(
            e.to_string(),
            "Message Template has 4 variable, please adjust your payload."
        );
        let e = render(&variant("No variables"), &body(&["extra"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Message Template has 0 variable, please adjust your payload."
        );
    }

    #[test]
    fn header_bold_first_footer_italic_last_buttons_between() {
        let mut v = variant("Your invoice {{1}} is ready.");
        v.header = Some(Header {
            format: HeaderFormat::Text,
            text: " Invoice  for {{1}} ".into(),
            media_url: String::new(),
        });
        v.footer = "Reply STOP to opt out".into();
        v.buttons = vec![
            Button {
                url: "https://shop.example/inv/{{1}}".into(),
                ..button(ButtonKind::Url, "View invoice")
            },
            Button {
                phone_number: "6281234567890".into(),
                ..button(ButtonKind::PhoneNumber, "Call us")
            },
            button(ButtonKind::QuickReply, "Pay now"),
            button(ButtonKind::QuickReply, "Later"),
            Button {
                url: "https://shop.example/help".into(),
                ..button(ButtonKind::Url, "Help")
            },
        ];
        let p = Params {
            body: vec!["INV-7".into()],
            header: vec!["Ana".into()],
            buttons: [(0, "INV-7?x=1".to_string())].into(),
            ..Params::default()
        };
        let r = render(&v, &p).unwrap();
        assert_eq!(
            r.text,
            "*Invoice for Ana*\n\n\
             Your invoice INV-7 is ready.\n\n\
             View invoice: https://shop.example/inv/INV-7?x=1\n\
             Call us: +6281234567890\n\
             Help: https://shop.example/help\n\n\
             1. Pay now\n\
             2. Later\n\n\
             _Reply STOP to opt out_"
        );
    }

    #[test]
    fn otp_code_on_its_own_line_from_the_button_or_the_body() {
        let mut v = variant("*{{1}}* is your verification code.");
        v.buttons = vec![button(ButtonKind::Otp, "Copy code")];
        v.footer = "This code expires in 10 minutes.".into();
        let r = render(&v, &body(&["482913"])).unwrap();
        assert_eq!(
            r.text,
            "*482913* is your verification code.\n\n482913\n\n_This code expires in 10 minutes._"
        );
        let p = Params {
            buttons: [(0, "777".to_string())].into(),
            ..body(&["482913"])
        };
        assert!(render(&v, &p).unwrap().text.contains("\n\n777\n\n"));
    }

    #[test]
    fn a_media_header_is_the_message_and_the_text_its_caption() {
        let mut v = variant("Promo {{1}}");
        v.header = Some(Header {
            format: HeaderFormat::Image,
            text: String::new(),
            media_url: "https://cdn.example/default.jpg".into(),
        });
        let r = render(&v, &body(&["today"])).unwrap();
        assert_eq!(r.text, "Promo today");
        let m = r.media.unwrap();
        assert_eq!(m.format, HeaderFormat::Image);
        assert_eq!(m.url, "https://cdn.example/default.jpg");
        let p = Params {
            media_url: "https://cdn.example/x.pdf".into(),
            filename: "x.pdf".into(),
            ..body(&["today"])
        };
        let m = render(&v, &p).unwrap().media.unwrap();
        assert_eq!(
            (m.url.as_str(), m.filename.as_str()),
            ("https://cdn.example/x.pdf", "x.pdf")
        );
    }

    #[test]
    fn missing_button_values_are_named() {
        let mut v = variant("Hi");
        v.buttons = vec![Button {
            url: "https://x.example/{{1}}".into(),
            ..button(ButtonKind::Url, "Go")
        }];
        let e = render(&v, &Params::default()).unwrap_err();
        assert_eq!(e.code(), "VALIDATION_ERROR");
        let mut v = variant("Hi");
        v.buttons = vec![button(ButtonKind::Otp, "Copy")];
        assert!(render(&v, &Params::default()).is_err());
    }

    #[test]
    fn variables_must_be_numbered_from_one_without_gaps() {
        assert_eq!(variable_count("b", "a {{1}} b {{2}} {{1}}").unwrap(), 2);
        assert_eq!(variable_count("b", "none").unwrap(), 0);
        assert!(variable_count("b", "{{2}}").is_err());
        assert!(variable_count("b", "{{0}}").is_err());
        assert!(variable_count("b", "{{name}}").is_err());
        assert!(variable_count("b", "{{101}}").is_err());
    }

    #[test]
    fn language_falls_back_to_the_primary_language_then_the_first() {
        use super::super::model::pick;
        let vs: Vec<Variant> = ["en_US", "id"]
            .iter()
            .map(|l| Variant {
                language: l.to_string(),
                ..variant("x")
            })
            .collect();
        assert_eq!(pick(&vs, "id").unwrap().language, "id");
        assert_eq!(pick(&vs, "id_ID").unwrap().language, "id");
        assert_eq!(pick(&vs, "en").unwrap().language, "en_US");
        assert_eq!(pick(&vs, "en-us").unwrap().language, "en_US");
        assert_eq!(pick(&vs, "fr").unwrap().language, "en_US");
        assert_eq!(pick(&vs, "").unwrap().language, "en_US");
    }
}
