//! Pacing end to end: the project's send policy over gRPC and REST, and what it does to
//! campaign messages (and, when asked, every message) as wasim sees them arrive — the gap
//! between two messages of a session, the typing indicator before each, the daily cap, the
//! cap of new contacts, the warm-up of a just-linked session, quiet hours, and a restart
//! that neither resets the pace nor lets a burst out. Test-sized values throughout.

use serde_json::{Value, json};
use wagate::proto::v1::broadcasts_service_client::BroadcastsServiceClient;
use wagate::proto::v1::{
    BroadcastParameters, BroadcastRecipient, CreateBroadcastRequest, CreateTemplateRequest,
    GetSendPolicyRequest, ListBroadcastRecipientsRequest, SendPolicy, TemplateVariant,
    UpdateSendPolicyRequest,
};

use crate::on_both_backends;
use crate::sak_api::Sak;
use crate::support::{TestApp, TestDb, TestProject, eventually, grpc_signed};

on_both_backends!(
    send_policy_is_read_and_changed_over_rest,
    campaign_messages_keep_the_gap_and_show_typing_first,
    daily_cap_new_contacts_and_warmup_hold_the_rest_with_reason,
    quiet_hours_hold_until_the_policy_lets_go,
    every_message_is_paced_when_the_project_asks,
    pace_survives_a_gateway_restart,
);

type Grpc = BroadcastsServiceClient<tonic::transport::Channel>;
const SVC: &str = "/wagate.v1.BroadcastsService/";

/// A gateway with sessions (0 sends, the others receive), unpaced and untyped by default so
/// each test states the policy it measures.
async fn app(db: TestDb, sessions: usize) -> TestApp {
    TestApp::init(db)
        .configure(|s| {
            s.broadcasts.pacing_min = std::time::Duration::ZERO;
            s.broadcasts.pacing_max = std::time::Duration::ZERO;
            s.broadcasts.typing_max = std::time::Duration::ZERO;
            s.broadcasts.warmup_days = 0;
        })
        .with_sessions(sessions)
        .start()
        .await
}

async fn grpc(t: &TestApp) -> Grpc {
    BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap()
}

async fn set_policy(g: &mut Grpc, p: &TestProject, req: UpdateSendPolicyRequest) -> SendPolicy {
    g.update_send_policy(grpc_signed(p, &format!("{SVC}UpdateSendPolicy"), req))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap()
}

async fn template(g: &mut Grpc, p: &TestProject) -> String {
    g.create_template(grpc_signed(
        p,
        &format!("{SVC}CreateTemplate"),
        CreateTemplateRequest {
            name: "hello".into(),
            category: "MARKETING".into(),
            variants: vec![TemplateVariant {
                language: "id".into(),
                body: "Hello {{1}}, this is a paced message.".into(),
                ..Default::default()
            }],
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .template
    .unwrap()
    .template_id
}

/// A direct campaign from session `from` to `to`; returns its id.
async fn direct(g: &mut Grpc, p: &TestProject, tid: &str, from: &str, to: &str) -> String {
    g.create_broadcast(grpc_signed(
        p,
        &format!("{SVC}CreateBroadcast"),
        CreateBroadcastRequest {
            template_id: tid.into(),
            language: "id".into(),
            session_ids: vec![from.into()],
            to_number: to.into(),
            to_name: "Ana".into(),
            parameters: Some(BroadcastParameters {
                body: vec![format!("friend {to}")],
                ..Default::default()
            }),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .broadcast
    .unwrap()
    .broadcast_id
}

/// The one recipient of a direct campaign.
async fn recipient(g: &mut Grpc, p: &TestProject, id: &str) -> BroadcastRecipient {
    g.list_broadcast_recipients(grpc_signed(
        p,
        &format!("{SVC}ListBroadcastRecipients"),
        ListBroadcastRecipientsRequest {
            broadcast_id: id.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .recipients
    .remove(0)
}

/// The recipient once its message was relayed by wasim, and when wasim first relayed it.
async fn arrival(t: &TestApp, g: &Grpc, p: &TestProject, id: &str) -> (BroadcastRecipient, u64) {
    let mut g = g.clone();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = recipient(&mut g, p, id).await;
        if !r.wa_message_id.is_empty()
            && let Some(at) = relayed_at(t, &r.wa_message_id).await
        {
            return (r, at);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the campaign message never reached wasim: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// When wasim first relayed the message with this WhatsApp id.
async fn relayed_at(t: &TestApp, wa_id: &str) -> Option<u64> {
    let all = t.wa().messages().await.unwrap();
    all.as_array()?
        .iter()
        .find(|m| m["id"] == wa_id)
        .and_then(|m| m["first_at_ms"].as_u64())
}

/// Waits until the recipient is held by pacing for a reason containing `why`.
async fn held(g: &Grpc, p: &TestProject, id: &str, why: &str) -> BroadcastRecipient {
    let mut g = g.clone();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = recipient(&mut g, p, id).await;
        if r.status == "pending" && r.held_reason.contains(why) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not held for {why:?}: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn send_policy_is_read_and_changed_over_rest(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let s = Sak { t: &t };
    let bearer = s.register("policy@example.com").await;
    let auth = ("authorization", bearer.as_str());
    let (code, got) = s.get("/api/v1/send-policy", auth).await;
    assert_eq!(code, 200, "{got}");
    // The defaults, documented in the README.
    assert_eq!(
        got["data"],
        json!({
            "minDelayMs": 4000, "maxDelayMs": 12000, "dailyCap": 1000, "newContactCap": 200,
            "warmupDays": 7, "warmupStartPercent": 20, "quietHours": null, "timeZone": "+00:00",
            "typing": true, "typingMinMs": 1000, "typingMaxMs": 5000, "allMessages": false
        })
    );
    let put = |body: Value| {
        let bearer = bearer.clone();
        let s = Sak { t: &t };
        async move {
            let r = s
                .req(reqwest::Method::PUT, "/api/v1/send-policy")
                .header("authorization", bearer)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            crate::support::read(r).await
        }
    };
    let (code, changed) = put(json!({
        "quietHours": {"start": "21:00", "end": "08:00"}, "timeZone": "+07:00",
        "dailyCap": 300, "allMessages": true
    }))
    .await;
    assert_eq!(code, 200, "{changed}");
    let d = &changed["data"];
    assert_eq!(d["quietHours"], json!({"start": "21:00", "end": "08:00"}));
    assert_eq!(
        (d["timeZone"].as_str(), d["dailyCap"].as_i64()),
        (Some("+07:00"), Some(300))
    );
    assert_eq!(
        (d["allMessages"].as_bool(), d["minDelayMs"].as_i64()),
        (Some(true), Some(4000))
    );
    // Read back, and quiet hours off again with null; the rest stays.
    let (_, got) = s.get("/api/v1/send-policy", auth).await;
    assert_eq!(got["data"], changed["data"]);
    let (code, off) = put(json!({"quietHours": null})).await;
    assert_eq!(code, 200, "{off}");
    assert_eq!(
        (
            off["data"]["quietHours"].clone(),
            off["data"]["dailyCap"].as_i64()
        ),
        (Value::Null, Some(300))
    );
    let (_, got) = s.get("/api/v1/send-policy", auth).await;
    assert_eq!(got["data"], off["data"], "stored as answered");
    // Refused: a time zone name (no tz database), a minimum gap above the maximum.
    for bad in [
        json!({"timeZone": "Asia/Jakarta"}),
        json!({"minDelayMs": 9000, "maxDelayMs": 1000}),
        json!({"quietHours": {"start": "25:00", "end": "08:00"}}),
    ] {
        let (code, body) = put(bad.clone()).await;
        assert_eq!(code, 400, "{bad} → {body}");
        assert_eq!(body["success"], false, "{body}");
    }
    t.shutdown().await;
}

async fn campaign_messages_keep_the_gap_and_show_typing_first(db: TestDb) {
    let t = app(db, 4).await;
    let pw = t.project().project_wide();
    let (a, rest) = (
        t.session(0).clone(),
        [t.session(1), t.session(2), t.session(3)],
    );
    let mut g = grpc(&t).await;
    let policy = set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            min_gap_ms: Some(1500),
            max_gap_ms: Some(1800),
            typing: Some(true),
            typing_min_ms: Some(300),
            typing_max_ms: Some(600),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((policy.min_gap_ms, policy.typing_max_ms), (1500, 600));
    let got = g
        .get_send_policy(grpc_signed(
            &pw,
            &format!("{SVC}GetSendPolicy"),
            GetSendPolicyRequest {},
        ))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(got, policy);
    let tid = template(&mut g, &pw).await;
    let mut ids = Vec::new();
    for r in rest {
        ids.push(direct(&mut g, &pw, &tid, &a.session_id, &r.phone_number).await);
    }
    let mut at = Vec::new();
    for id in &ids {
        at.push(arrival(&t, &g, &pw, id).await.1);
    }
    at.sort_unstable();
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("campaign gaps at wasim (policy 1500–1800 ms, typing 300–600 ms): {gaps:?} ms");
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= 1500,
            "arrivals at wasim {at:?}: a gap under 1500 ms"
        );
    }
    // Each message was preceded by "typing…" from A to its recipient, at least the
    // policy's shortest typing time before it arrived.
    let typing = t
        .wa()
        .chatstates(Some(a.phone_number.as_str()))
        .await
        .unwrap();
    for r in rest {
        let to = format!("{}@s.whatsapp.net", r.phone_number);
        let shown = typing
            .iter()
            .find(|c| c.to == to && c.state == "composing")
            .unwrap_or_else(|| panic!("no typing indicator to {to}: {typing:?}"));
        let id = ids[rest
            .iter()
            .position(|x| x.phone_number == r.phone_number)
            .unwrap()]
        .clone();
        let (_, arrived) = arrival(&t, &g, &pw, &id).await;
        assert!(
            shown.at_ms + 250 <= arrived,
            "typing at {} then the message at {arrived}",
            shown.at_ms
        );
    }
    t.shutdown().await;
}

async fn daily_cap_new_contacts_and_warmup_hold_the_rest_with_reason(db: TestDb) {
    let t = app(db, 4).await;
    let pw = t.project().project_wide();
    let (a, b, c, d) = (t.session(0), t.session(1), t.session(2), t.session(3));
    let mut g = grpc(&t).await;
    let tid = template(&mut g, &pw).await;

    // One new contact a day: B goes, C (new too) waits, B again (known now) goes.
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            new_contact_cap: Some(1),
            daily_cap: Some(0),
            ..Default::default()
        },
    )
    .await;
    let to_b = direct(&mut g, &pw, &tid, &a.session_id, &b.phone_number).await;
    arrival(&t, &g, &pw, &to_b).await;
    let to_c = direct(&mut g, &pw, &tid, &a.session_id, &c.phone_number).await;
    let r = held(
        &g,
        &pw,
        &to_c,
        "pacing: the session's daily cap of 1 new contacts",
    )
    .await;
    assert!(r.wa_message_id.is_empty());
    let again = direct(&mut g, &pw, &tid, &a.session_id, &b.phone_number).await;
    arrival(&t, &g, &pw, &again).await;

    // A session linked today gets 20 % of a cap of 10: 2, both taken by B already.
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            new_contact_cap: Some(0),
            daily_cap: Some(10),
            warmup_days: Some(7),
            warmup_start_percent: Some(20),
            ..Default::default()
        },
    )
    .await;
    let to_d = direct(&mut g, &pw, &tid, &a.session_id, &d.phone_number).await;
    let r = held(&g, &pw, &to_d, "daily cap of 2 messages").await;
    assert!(
        r.held_reason
            .ends_with("warm-up of a recently linked session: 20 %"),
        "{}",
        r.held_reason
    );
    // C, released by the policy change, is now held by the cap too (not sent): the
    // project's cap is a ceiling for a campaign created without one.
    let r = held(&g, &pw, &to_c, "daily cap of 2 messages").await;
    assert!(r.wa_message_id.is_empty());

    // Without the ramp, the cap of 10 lets D and C go.
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            warmup_days: Some(0),
            ..Default::default()
        },
    )
    .await;
    arrival(&t, &g, &pw, &to_d).await;
    arrival(&t, &g, &pw, &to_c).await;
    t.shutdown().await;
}

/// `HH:MM` of `now + minutes` at UTC offset `offset_h`.
fn local_hm(minutes: i64, offset_h: i64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::minutes(minutes + offset_h * 60);
    at.format("%H:%M").to_string()
}

async fn quiet_hours_hold_until_the_policy_lets_go(db: TestDb) {
    let t = app(db, 2).await;
    let pw = t.project().project_wide();
    let (a, b) = (t.session(0), t.session(1));
    let mut g = grpc(&t).await;
    let tid = template(&mut g, &pw).await;
    // Quiet from an hour ago to an hour ahead, in Jakarta time.
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            quiet_start: Some(local_hm(-60, 7)),
            quiet_end: Some(local_hm(60, 7)),
            utc_offset: Some("+07:00".into()),
            ..Default::default()
        },
    )
    .await;
    let id = direct(&mut g, &pw, &tid, &a.session_id, &b.phone_number).await;
    let r = held(&g, &pw, &id, "pacing: quiet hours (").await;
    assert!(r.held_reason.ends_with(" at +07:00)"), "{}", r.held_reason);
    assert!(r.wa_message_id.is_empty());
    let q = crate::support::qontak::Qontak::new(&t, t.project());
    let (code, log) = q
        .get(&format!("/qontak/chat/v1/broadcasts/{id}/whatsapp/log"))
        .await;
    assert_eq!(code, 200, "{log}");
    assert_eq!(log["data"][0]["is_pacing"], true, "{log}");
    // Quiet hours off: the held message goes at once.
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            quiet_start: Some(String::new()),
            quiet_end: Some(String::new()),
            ..Default::default()
        },
    )
    .await;
    arrival(&t, &g, &pw, &id).await;
    t.shutdown().await;
}

async fn every_message_is_paced_when_the_project_asks(db: TestDb) {
    let t = app(db, 3).await;
    let p = t.project().clone();
    let pw = p.project_wide();
    let (a, b, c) = (t.session(0).clone(), t.session(1), t.session(2));
    let mut g = grpc(&t).await;
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            all_messages: Some(true),
            min_gap_ms: Some(1500),
            max_gap_ms: Some(1500),
            typing: Some(true),
            typing_min_ms: Some(200),
            typing_max_ms: Some(200),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for to in [b, c, b] {
        let (code, body) = t
            .send_json(
                &p.via(&a),
                json!({"recipient": to.phone_number, "message": "ordinary, paced"}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_owned());
    }
    let mut at = Vec::new();
    for id in &ids {
        let wa_id = wagate::sessions::wa_message_id(id);
        at.push(
            eventually(60, "the paced message reaches wasim", || async {
                relayed_at(&t, &wa_id).await
            })
            .await,
        );
    }
    at.sort_unstable();
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("ordinary messages' gaps at wasim (policy 1500 ms): {gaps:?} ms");
    for w in at.windows(2) {
        assert!(w[1] - w[0] >= 1500, "arrivals at wasim {at:?}");
    }
    let typing = t
        .wa()
        .chatstates(Some(a.phone_number.as_str()))
        .await
        .unwrap();
    assert!(
        typing.iter().filter(|c| c.state == "composing").count() >= 3,
        "{typing:?}"
    );
    // Nothing was spent or dropped by the holds: each message is sent (its server ack is
    // recorded just after wasim relays it).
    for id in &ids {
        eventually(10, "the paced message's ack", || async {
            let (_, s) = t.status(&p.via(&a), id).await;
            matches!(
                s["data"]["status"].as_str(),
                Some("sent" | "delivered" | "read")
            )
            .then_some(())
        })
        .await;
    }
    t.shutdown().await;
}

async fn pace_survives_a_gateway_restart(db: TestDb) {
    let t = app(db, 3).await;
    let pw = t.project().project_wide();
    let (a, b, c) = (
        t.session(0).clone(),
        t.session(1).clone(),
        t.session(2).clone(),
    );
    let mut g = grpc(&t).await;
    // A gap longer than the restart takes.
    let gap = 12_000u64;
    set_policy(
        &mut g,
        &pw,
        UpdateSendPolicyRequest {
            min_gap_ms: Some(gap as i64),
            max_gap_ms: Some(gap as i64),
            ..Default::default()
        },
    )
    .await;
    let tid = template(&mut g, &pw).await;
    let first = direct(&mut g, &pw, &tid, &a.session_id, &b.phone_number).await;
    let (_, first_at) = arrival(&t, &g, &pw, &first).await;

    let t = t.stop().await.start().await;
    let mut g = grpc(&t).await;
    let second = direct(&mut g, &pw, &tid, &a.session_id, &c.phone_number).await;
    held(
        &g,
        &pw,
        &second,
        "pacing: the session's gap between messages",
    )
    .await;
    let (_, second_at) = arrival(&t, &g, &pw, &second).await;
    eprintln!(
        "across a restart: the next message {} ms after the last (gap {gap} ms)",
        second_at - first_at
    );
    assert!(
        second_at >= first_at + gap,
        "the first at {first_at}, the next {} ms later, across a restart",
        second_at - first_at
    );
    t.shutdown().await;
}
