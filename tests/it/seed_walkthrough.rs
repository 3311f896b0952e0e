//! The gm-data tutorial's walkthrough, told as a story against a real server.

use crate::common;

use common::{assert_hex16, seed, spawn_app};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn the_tutorials_walkthrough_works_end_to_end() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");

    // Root makes jane's and bob's folders with the tutorial's exact JSON.
    let (_, root_props) = app.get_json("/props/1", Some(&root)).await;
    let jane_req: Value = serde_json::from_str(&seed("01-create-jane.json")).unwrap();
    let out = app
        .write_raw(Some(&root), seed("01-create-jane.json"))
        .await;
    assert_eq!(out.status(), 200);
    assert_eq!(out.headers()["x-schema-version"], "6");
    assert!(out.headers().contains_key("x-request-id"));
    let out: Vec<Value> = out.json().await.unwrap();
    assert_eq!(out.len(), 1);
    let jane_dir = &out[0];
    assert_hex16(&jane_dir["tstamp"], "tstamp");
    assert_hex16(&jane_dir["oid"], "oid");
    assert_eq!(jane_dir["tstampend"], "7fffffffffffffff");
    assert_eq!(jane_dir["expiration"], "7fffffffffffffff");
    assert_eq!(jane_dir["userpolicy"], json!({"label": "asRoot"}));
    assert_eq!(jane_dir["jwthash"], sha256_hex(&root));
    assert_eq!(jane_dir["schemaversion"], 6);
    assert_eq!(jane_dir["name"], "jane");
    assert_eq!(jane_dir["action"], "C");
    assert_eq!(jane_dir["parentoid"], "0000000000000001");
    assert_eq!(
        jane_dir["checkedtstamp"], root_props["tstamp"],
        "a create checks against the parent's version"
    );
    assert_eq!(jane_dir["objectpolicy"], jane_req["objectpolicy"]);
    assert_eq!(jane_dir["security"], jane_req["security"]);
    assert_eq!(jane_dir["derived"], json!({}));
    assert_eq!(jane_dir["fulldir"], "/0000000000000001/");
    assert_eq!(
        jane_dir["policy"],
        json!({"policy": ["C", "R", "U", "D", "X", "P"]})
    );
    // The tutorial's field order.
    let keys: Vec<&str> = jane_dir
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        &keys[..11],
        [
            "tstamp",
            "tstampend",
            "userpolicy",
            "jwthash",
            "schemaversion",
            "name",
            "action",
            "oid",
            "parentoid",
            "expiration",
            "checkedtstamp"
        ]
    );
    let jane_oid = jane_dir["oid"].as_str().unwrap().to_string();

    let bob_dir = app.write_raw(Some(&root), seed("02-create-bob.json")).await;
    assert_eq!(bob_dir.status(), 200);
    let bob_dir: Vec<Value> = bob_dir.json().await.unwrap();
    assert_eq!(bob_dir[0]["userpolicy"]["label"], "asRoot");
    assert!(
        bob_dir[0]["tstamp"].as_str() > jane_dir["tstamp"].as_str(),
        "tstamps increase"
    );

    // Jane makes bigDir and two children in one transaction, with references -1 and -2.
    let big = seed("03-bigdir-folders.json").replace("PARENT", &jane_oid);
    let out = app.write_raw(Some(&jane), big).await;
    assert_eq!(out.status(), 200);
    let out: Vec<Value> = out.json().await.unwrap();
    assert_eq!(out.len(), 3);
    let big_oid = out[0]["oid"].as_str().unwrap().to_string();
    assert_eq!(out[0]["userpolicy"]["label"], "asjane");
    assert_eq!(out[0]["jwthash"], sha256_hex(&jane));
    assert_eq!(
        out[1]["parentoid"],
        big_oid.as_str(),
        "-1 copied bigDir's oid"
    );
    assert_eq!(
        out[2]["parentoid"],
        big_oid.as_str(),
        "-2 copied bigDir's oid"
    );
    assert_eq!(out[1]["checkedtstamp"], out[0]["tstamp"]);
    assert_eq!(
        out[1]["fulldir"],
        format!("/0000000000000001/{jane_oid}/{big_oid}/")
    );
    let child = out[1].clone();
    let child_oid = child["oid"].as_str().unwrap().to_string();

    // A rename by U, sending the whole state back as the Python client does.
    let mut props = app
        .get_json(&format!("/props/{child_oid}"), Some(&jane))
        .await
        .1;
    props["name"] = json!("timer-renamed");
    props["action"] = json!("U");
    let renamed = app.write_ok(Some(&jane), &json!([props])).await;
    assert_eq!(renamed[0]["name"], "timer-renamed");
    assert_eq!(renamed[0]["oid"], child_oid.as_str());
    assert_eq!(renamed[0]["checkedtstamp"], child["tstamp"]);
    assert_eq!(renamed[0]["action"], "U");

    // The path address follows the rename.
    let (s, by_path) = app
        .get_json("/props/1/jane/bigDir/timer-renamed", Some(&bob))
        .await;
    assert_eq!(s, 200, "{by_path}");
    assert_eq!(by_path["oid"], child_oid.as_str());
    assert_eq!(
        by_path["policy"]["policy"],
        json!(["R", "X"]),
        "bob only reads jane's things"
    );

    // Bob may read but not write in jane's folder.
    let denied = app
        .write(
            Some(&bob),
            &json!([{"action": "C", "name": "intruder", "parentoid": big_oid}]),
        )
        .await;
    assert_eq!(denied.status(), 403);

    // A delete by D, with the tutorial's whole-state body.
    let del = seed("05-delete.json")
        .replace("OID", &child_oid)
        .replace("PARENT", &big_oid)
        .replace("\"isfile\": true", "\"isfile\": false")
        .replace("\"mimetype\": \"octet/stream\",", "");
    let del: Vec<Value> = {
        let r = app.write_raw(Some(&jane), del).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    };
    assert_eq!(del[0]["action"], "D");
    assert_eq!(
        del[0]["name"], "timer-renamed",
        "a delete records the current state"
    );
    let (s, _) = app
        .get_json(&format!("/props/{child_oid}"), Some(&jane))
        .await;
    assert_eq!(s, 404, "deleted objects are gone from props");
    let (s, listing) = app.get_json(&format!("/list/{big_oid}"), None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["testlocalDir"],
        "anonymous lists bigDir without the deleted child"
    );

    // History shows every version, oldest first, each ending where the next begins.
    let (s, hist) = app.get_json(&format!("/history/{child_oid}"), None).await;
    assert_eq!(s, 200);
    let hist = hist.as_array().unwrap();
    let actions: Vec<&str> = hist.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["C", "U", "D"]);
    assert_eq!(hist[0]["tstampend"], hist[1]["tstamp"]);
    assert_eq!(hist[1]["tstampend"], hist[2]["tstamp"]);
    assert_eq!(hist[2]["tstampend"], "7fffffffffffffff");
    assert_eq!(hist[0]["name"], "timerDir");
    assert_eq!(hist[1]["name"], "timer-renamed");
}

#[tokio::test]
async fn the_curl_scripts_upsert_makes_the_home_folder_on_the_way() {
    let app = spawn_app().await;
    let rob = app.token_for("rob");
    // The curl script's metadata, with a folder in place of the file.
    let meta = seed("06-curl-script.json")
        .replace("FILE", "holiday")
        .replace("LABEL", "PUBLIC")
        .replace("\"isfile\": true", "\"isfile\": false");
    let r = app.write_raw(Some(&rob), meta).await;
    let status = r.status();
    let out: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{out}");
    let out = out.as_array().unwrap();
    assert_eq!(out[0]["name"], "holiday");
    assert_eq!(out[0]["action"], "C", "an upsert of a new name creates");
    // Then the two folders made on the way: localuser@email.com and pics.
    let made: Vec<&str> = out[1..]
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(made, ["localuser@email.com", "pics"]);
    assert_eq!(
        out[1]["objectpolicy"], out[0]["objectpolicy"],
        "folders made on the way take the event's policy"
    );
    let (s, p) = app
        .get_json(
            "/props/1/world/localuser@email.com/pics/holiday",
            Some(&rob),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    // Anyone else sees nothing: the Rego policy only grants localuser@email.com.
    let (s, _) = app
        .get_json(
            "/props/1/world/localuser@email.com/pics/holiday",
            Some(&app.token_for("bob")),
        )
        .await;
    assert_eq!(s, 404);
    // The same upsert again updates rather than duplicating.
    let again = seed("06-curl-script.json")
        .replace("FILE", "holiday")
        .replace("LABEL", "SECRET")
        .replace("\"isfile\": true", "\"isfile\": false");
    let r: Value = app.write_raw(Some(&rob), again).await.json().await.unwrap();
    assert_eq!(r[0]["action"], "U");
    assert_eq!(r[0]["security"]["label"], "SECRET");
    assert_eq!(
        r.as_array().unwrap().len(),
        1,
        "no folders made the second time"
    );
}
