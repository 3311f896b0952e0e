//! Concurrent writers (SPEC §2, §5): every transaction of many concurrent clients lands
//! exactly once with unique, increasing tstamps and oids; optimistic concurrency lets
//! exactly one of many racing updates win; names stay unique under races.

use crate::common;
use crate::common::extra;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{assert_hex16, spawn_app};
use extra::*;
use serde_json::{json, Value};
use tokio::sync::Barrier;

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 200;

async fn post_write(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "metadata",
        reqwest::multipart::Part::text(body.to_string()).file_name("metadata.json"),
    );
    let resp = client
        .post(format!("{base}/write"))
        .header("userpolicy", token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    status_json(resp).await
}

fn tstamp_u64(v: &Value) -> u64 {
    u64::from_str_radix(
        v.as_str().unwrap_or_else(|| panic!("not a tstamp: {v}")),
        16,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_times_200_transactions_all_land_once_with_unique_increasing_tstamps() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let parent = mkdir(&app, &root, "1", "load", None).await;
    let parent_oid = oid_of(&parent);
    let events_before = app.event_count();

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = app.base.clone();
        let root = root.clone();
        let parent_oid = parent_oid.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut got: Vec<Value> = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT {
                let body = json!([{"action": "C", "parentoid": parent_oid,
                                   "name": format!("c{c:02}-{i:03}")}]);
                let (s, out) = post_write(&client, &base, &root, &body).await;
                assert_eq!(s, 200, "client {c} write {i}: {out}");
                let out = out.as_array().unwrap();
                assert_eq!(out.len(), 1);
                got.push(out[0].clone());
            }
            got
        }));
    }
    let mut per_client: Vec<Vec<Value>> = Vec::new();
    for t in tasks {
        per_client.push(t.await.unwrap());
    }

    let all: Vec<&Value> = per_client.iter().flatten().collect();
    assert_eq!(all.len(), CLIENTS * PER_CLIENT);
    assert_eq!(
        app.event_count(),
        events_before + (CLIENTS * PER_CLIENT) as i64,
        "exactly one event per transaction"
    );

    let tstamps: HashSet<u64> = all.iter().map(|e| tstamp_u64(&e["tstamp"])).collect();
    assert_eq!(tstamps.len(), all.len(), "every tstamp is unique");
    let oids: HashSet<String> = all.iter().map(|e| oid_of(e)).collect();
    assert_eq!(oids.len(), all.len(), "every oid is unique");
    for e in &all {
        assert_hex16(&e["tstamp"], "tstamp");
        assert_hex16(&e["oid"], "oid");
        assert_eq!(e["parentoid"], parent_oid.as_str());
        assert_eq!(
            e["checkedtstamp"], parent["tstamp"],
            "a create checks the parent's version"
        );
    }
    for (c, events) in per_client.iter().enumerate() {
        let ts: Vec<u64> = events.iter().map(|e| tstamp_u64(&e["tstamp"])).collect();
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "client {c}: tstamps it received do not strictly increase"
        );
        // The names it wrote are the names it got back.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["name"], format!("c{c:02}-{i:03}"));
        }
    }

    // Every oid is listed exactly once under the parent.
    let (s, listing) = app
        .get_json(&format!("/list/{parent_oid}"), Some(&root))
        .await;
    assert_eq!(s, 200);
    let listed: Vec<String> = listing.as_array().unwrap().iter().map(oid_of).collect();
    assert_eq!(listed.len(), CLIENTS * PER_CLIENT);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for o in &listed {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "an oid is listed twice");
    assert_eq!(listed.iter().cloned().collect::<HashSet<_>>(), oids);
    // And the paged listing agrees.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => format!("/list/{parent_oid}?limit=1000"),
            Some(a) => format!("/list/{parent_oid}?limit=1000&after={a}"),
        };
        let (s, page) = app.get_json(&path, Some(&root)).await;
        assert_eq!(s, 200);
        let page: Vec<String> = page.as_array().unwrap().iter().map(oid_of).collect();
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(page);
    }
    assert_eq!(paged, listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_updating_the_same_version_one_wins_and_the_rest_get_409() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let target = mkdir(&app, &root, "1", "contended", None).await;
    let oid = oid_of(&target);
    let (_, props) = app.get_json(&format!("/props/{oid}"), Some(&root)).await;
    let read_tstamp = props["tstamp"].clone();
    assert_eq!(read_tstamp, target["tstamp"]);

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = app.base.clone();
        let root = root.clone();
        let oid = oid.clone();
        let read_tstamp = read_tstamp.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Warm the connection so the race is about the write, not the handshake.
            client.get(format!("{base}/healthz")).send().await.unwrap();
            let body = json!([{"action": "U", "oid": oid, "tstamp": read_tstamp,
                               "description": format!("client {c}")}]);
            barrier.wait().await;
            let (s, out) = post_write(&client, &base, &root, &body).await;
            (c, s, out)
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (c, s, out) = t.await.unwrap();
        match s {
            200 => winners.push((c, out)),
            409 => {
                assert_error_shape(&out, 409, Some(0));
                conflicts += 1;
            }
            other => panic!("client {c}: unexpected {other}: {out}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update wins");
    assert_eq!(conflicts, CLIENTS - 1);
    let (c, out) = &winners[0];
    assert_eq!(out[0]["checkedtstamp"], read_tstamp);
    let (_, now) = app.get_json(&format!("/props/{oid}"), Some(&root)).await;
    assert_eq!(now["description"], format!("client {c}"));
    assert_eq!(now["tstamp"], out[0]["tstamp"]);
    let (_, hist) = app.get_json(&format!("/history/{oid}"), Some(&root)).await;
    assert_eq!(
        hist.as_array().unwrap().len(),
        2,
        "the create and the one winning update"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_creating_the_same_name_one_wins_and_the_rest_get_409() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let parent = oid_of(&mkdir(&app, &root, "1", "race", None).await);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = app.base.clone();
        let root = root.clone();
        let parent = parent.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            client.get(format!("{base}/healthz")).send().await.unwrap();
            let body = json!([{"action": "C", "parentoid": parent, "name": "the-one",
                               "description": format!("client {c}")}]);
            barrier.wait().await;
            post_write(&client, &base, &root, &body).await
        }));
    }
    let mut ok = 0;
    let mut conflict = 0;
    for t in tasks {
        let (s, out) = t.await.unwrap();
        match s {
            200 => ok += 1,
            409 => {
                assert_error_shape(&out, 409, Some(0));
                conflict += 1
            }
            other => panic!("unexpected {other}: {out}"),
        }
    }
    assert_eq!((ok, conflict), (1, CLIENTS - 1));
    let (_, listing) = app.get_json(&format!("/list/{parent}"), Some(&root)).await;
    assert_eq!(listing.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_multi_event_transactions_stay_whole() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let parent = oid_of(&mkdir(&app, &root, "1", "batches", None).await);
    let events_before = app.event_count();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let base = app.base.clone();
        let root = root.clone();
        let parent = parent.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut out = Vec::new();
            for i in 0..25 {
                let body = json!([
                    {"action": "C", "parentoid": parent, "name": format!("dir-{c}-{i}")},
                    {"action": "C", "name": "left",
                     "references": [{"address": -1, "from": "oid", "to": "parentoid"}]},
                    {"action": "C", "name": "right",
                     "references": [{"address": -2, "from": "oid", "to": "parentoid"}]}
                ]);
                let (s, v) = post_write(&client, &base, &root, &body).await;
                assert_eq!(s, 200, "{v}");
                out.push(v);
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    assert_eq!(app.event_count(), events_before + 8 * 25 * 3);
    for r in &results {
        let dir = oid_of(&r[0]);
        assert_eq!(r[1]["parentoid"], dir.as_str());
        assert_eq!(r[2]["parentoid"], dir.as_str());
        let t: Vec<u64> = (0..3).map(|i| tstamp_u64(&r[i]["tstamp"])).collect();
        assert!(
            t[0] < t[1] && t[1] < t[2],
            "tstamps increase within a transaction"
        );
        let (s, l) = app.get_json(&format!("/list/{dir}"), Some(&root)).await;
        assert_eq!(s, 200);
        let names: HashSet<&str> = l
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, HashSet::from(["left", "right"]));
    }
}
