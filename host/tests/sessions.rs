//! Console sessions on real processes: opened on one replica of a shared
//! PostgreSQL store and honoured by another, ended there by a logout on the
//! first; failed logins throttled per address and logged without the guess.

use std::path::Path;

use reqwest::header;

mod common;
use common::*;

const TOKENS: &str = r#"
tokens = [
  { name = "on-call", env = "SESSIONS_T_READ", roles = ["read"] },
  { name = "root", env = "SESSIONS_T_ADMIN", roles = ["admin"] },
]"#;
const ENV: [(&str, &str); 2] = [
    ("SESSIONS_T_READ", "sessions-read-token-0123456789"),
    ("SESSIONS_T_ADMIN", "sessions-admin-token-0123456789"),
];

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in at `server` with `token`: the answer.
async fn login(server: &Server, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/login", server.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

/// The `name=value` of the cookie a login set.
fn cookie_of(r: &reqwest::Response) -> String {
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn get(server: &Server, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", server.base))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// The CSRF token of a page's forms.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
    page[at..at + 32].to_string()
}

fn replica(dir: &Path, db: &Db, name: &str) -> Server {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "[server]\ndata_dir = \"{}\"\nstore = \"{}\"\nreplica = \"{name}\"\n{TOKENS}\n",
        home.join("data").display(),
        db.url()
    );
    start_logged(&home, &config, &ENV)
}

/// Behind a load balancer, the next request may reach another replica: a
/// session must hold there, and a logout must end it everywhere. (The
/// cookie was the token itself: every replica took it, and kept taking it
/// after the logout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_replica_holds_on_another_until_a_logout_ends_it_on_both() {
    let db = Db::new("sessions").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(dir.path(), &db, "a"), replica(dir.path(), &db, "b"));

    let r = login(&a, "sessions-admin-token-0123456789").await;
    assert_eq!(r.status(), 303);
    let cookie = cookie_of(&r);
    let on_a = get(&a, "/", &cookie).await;
    assert_eq!(on_a.status(), 200);
    let on_b = get(&b, "/", &cookie).await;
    assert_eq!(on_b.status(), 200, "the session holds on the other replica");
    assert_eq!(
        on_b.headers()[header::CACHE_CONTROL],
        "no-store",
        "a page is not kept"
    );
    // A page of one replica serves a form posted to the other.
    let token = csrf(&on_a.text().await.unwrap());
    assert_eq!(token, csrf(&on_b.text().await.unwrap()));
    let r = client()
        .post(format!("{}/console/pause", b.base))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", token.as_str()), ("reason", "sessions test")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let stored = db
        .one("SELECT count(*) FROM sessions WHERE token = 'root'")
        .await;
    assert_eq!(stored, 1, "the store holds the session by its token's name");
    let leaked = db
        .one(&format!(
            "SELECT count(*) FROM sessions WHERE id_hash LIKE '%{}%' OR binding LIKE '%{}%'",
            &cookie["remedy_session=".len()..],
            &cookie["remedy_session=".len()..],
        ))
        .await;
    assert_eq!(leaked, 0, "the store does not hold the cookie's value");

    let r = client()
        .post(format!("{}/logout", a.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for (name, server) in [("a", &a), ("b", &b)] {
        let r = get(server, "/", &cookie).await;
        assert_eq!(
            r.status(),
            303,
            "replica {name}: the old cookie opens nothing"
        );
        assert_eq!(r.headers()[header::LOCATION], "/login?next=/");
        let r = get(server, "/v1/plugins", &cookie).await;
        assert_eq!(r.status(), 401, "replica {name}: nor reads the API");
    }
}

/// A guesser gets a handful of tries, then one a second (`429` with
/// `Retry-After`, also for API bearer tokens); each failure is logged at
/// warn with the peer, never with what was guessed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_address_and_logged_without_the_guess() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n{TOKENS}\n",
        dir.path().join("data").display()
    );
    let server = start_logged(dir.path(), &config, &ENV);
    let mut refused = 0;
    let mut first_429 = None;
    for i in 0..8 {
        let r = login(&server, &format!("guessed-secret-{i}-abcdef")).await;
        match r.status().as_u16() {
            401 => refused += 1,
            429 => {
                assert_eq!(r.headers()[header::RETRY_AFTER], "1");
                first_429.get_or_insert(i);
            }
            other => panic!("guess {i}: {other}"),
        }
    }
    assert_eq!((refused, first_429), (5, Some(5)), "five tries, then 429");
    let r = client()
        .get(format!("{}/v1/runs", server.base))
        .bearer_auth("sessions-read-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the API's tokens count the same");

    let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused an unknown token"))
        .collect();
    assert_eq!(failures.len(), 5, "{log}");
    for line in failures {
        assert!(
            line.contains("WARN") && line.contains("127.0.0.1"),
            "{line}"
        );
    }
    assert!(!log.contains("guessed-secret"), "{log}");
}
