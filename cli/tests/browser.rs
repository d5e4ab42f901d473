//! Real browsers against `tern serve --web`: headless Chromium (chromedriver) and Firefox ESR
//! (geckodriver), driven over W3C WebDriver from Rust. The page's own JavaScript (browser/checks.js) opens
//! WebTransport sessions pinned by `serverCertificateHashes` and checks datagrams, streams, closes, resets
//! and rejections byte for byte and code for code; what only the server can see (the page's close code, its
//! stream reset code, the 404) is read from `tern serve`'s stdout.
//!
//! `tools/browsers.sh` installs what is missing (Debian's chromium, chromium-driver, firefox-esr; geckodriver
//! built once with cargo and cached). When that fails the tests skip with a message, except under `CI=true`.
//! The browser versions seen are printed and written to `target/browser-versions.txt`.
//!
//! Besides the checks, each browser also runs 10 sessions from 10 tabs at once, a wrong and a missing
//! certificate hash (both must fail), and finally checks that `tern serve` printed the end of every session
//! with the code and reason the page (or the server) closed it with.
//!
//! Logs go to target/browser-logs/: BROWSER-serve.log (`tern serve`'s stderr; `RUST_LOG` is passed on) and
//! BROWSER-driver.log. `TERN_BROWSER_VERBOSE=1` adds Chromium's `--enable-logging --v=1` (chromium-browser.log)
//! and Firefox's MOZ_LOG for WebTransport, HTTP/3 and QUIC (firefox-moz.log*).

#[path = "browser/serve.rs"]
mod serve;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use serve::Serve;
use webdriver::{free_port, Driver, Session};

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const CHECKS_JS: &str = include_str!("browser/checks.js");

/// What a check expects `tern serve` to print while (or shortly after) it runs.
struct Check {
    name: &'static str,
    what: &'static str,
    server_line: &'static [&'static str],
}

const CHECKS: &[Check] = &[
    Check {
        name: "datagrams",
        what: "datagram echo + maxDatagramSize",
        server_line: &[],
    },
    Check {
        name: "bidi",
        what: "bidi stream echo 1 MiB",
        server_line: &[],
    },
    Check {
        name: "uni",
        what: "uni stream echo",
        server_line: &[],
    },
    Check {
        name: "server_streams",
        what: "server-opened bidi + uni",
        server_line: &[],
    },
    Check {
        name: "server_close",
        what: "server closes 42 \"bye\"",
        server_line: &[],
    },
    Check {
        name: "page_close",
        what: "page closes 7 \"done\"",
        server_line: &["closed: code 7 reason \"done\""],
    },
    Check {
        name: "no_route",
        what: "no route: ready rejects",
        server_line: &["rejected with 404"],
    },
    Check {
        name: "server_reset",
        what: "server resets with 99",
        server_line: &[],
    },
    Check {
        name: "page_abort",
        what: "page aborts writable with 5",
        server_line: &["stream reset by peer on", "code 5"],
    },
    Check {
        name: "concurrent",
        what: "10 sessions in a page at once",
        server_line: &[],
    },
    // Run from Rust: 10 tabs, each with one session, all open at once.
    Check {
        name: "tabs",
        what: "10 pages (tabs) at once echo",
        server_line: &[],
    },
    // Last, so a failed handshake cannot affect the others.
    Check {
        name: "cert_pinning",
        what: "wrong or no hash: ready rejects",
        server_line: &[],
    },
];

#[derive(Clone, Copy, PartialEq)]
enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// Writes to the test's stderr directly: unlike `eprintln!`, not held back by the test harness, so the
/// browser versions, the summary and a skip show in a plain `cargo test`.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Runs tools/browsers.sh for `browser`; its KEY=PATH lines, or None to skip (install failed, not CI).
fn tools(browser: Browser) -> Option<BTreeMap<String, PathBuf>> {
    let script = repo().join("tools/browsers.sh");
    let start = Instant::now();
    // Its progress and, on failure, its install log go straight to the terminal.
    let out = Command::new("bash")
        .arg(&script)
        .arg(browser.name())
        .stderr(Stdio::inherit())
        .output();
    let problem = match out {
        Ok(o) if o.status.success() => {
            let map: BTreeMap<String, PathBuf> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
                .collect();
            if start.elapsed() > Duration::from_secs(5) {
                say(&format!(
                    "{}: tools/browsers.sh took {:.0?}",
                    browser.name(),
                    start.elapsed()
                ));
            }
            return Some(map);
        }
        Ok(o) => format!(
            "{} failed ({}); its output is above",
            script.display(),
            o.status
        ),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    if under_ci() {
        panic!("{}: {problem}", browser.name());
    }
    say(&format!(
        "SKIPPED: {} browser tests: could not install what they need (under CI=true this fails): {problem}",
        browser.name()
    ));
    None
}

fn unique_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tern-browser-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the driver for `browser` and a session with a fresh profile and `acceptInsecureCerts: false`.
fn start_driver(
    browser: Browser,
    tools: &BTreeMap<String, PathBuf>,
    profile: &Path,
    logs: &Path,
) -> Result<Driver, String> {
    let get = |k: &str| {
        tools
            .get(k)
            .cloned()
            .ok_or_else(|| format!("tools/browsers.sh printed no {k}"))
    };
    let port = free_port();
    let log = logs.join(format!("{}-driver.log", browser.name()));
    let mut driver = match browser {
        Browser::Chromium => Driver::start(
            &get("CHROMEDRIVER")?,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            &[],
            port,
            log,
        )?,
        Browser::Firefox => Driver::start(
            &get("GECKODRIVER")?,
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--log".into(),
                "info".into(),
            ],
            &firefox_env(),
            port,
            log,
        )?,
    };
    driver.owned_markers.push(profile.display().to_string());
    Ok(driver)
}

/// With `TERN_BROWSER_VERBOSE`, Firefox logs its WebTransport, HTTP/3 and QUIC work (MOZ_LOG) into
/// target/browser-logs/firefox-moz.log*. Set on geckodriver, which passes its environment on.
fn firefox_env() -> Vec<(String, String)> {
    if std::env::var_os("TERN_BROWSER_VERBOSE").is_none() {
        return Vec::new();
    }
    let log = target_dir().join("browser-logs").join("firefox-moz.log");
    vec![
        (
            "MOZ_LOG".into(),
            "timestamp,WebTransport:5,nsHttp:5,neqo_http3::*:5,neqo_transport::*:4".into(),
        ),
        ("MOZ_LOG_FILE".into(), log.display().to_string()),
    ]
}

fn capabilities(browser: Browser, tools: &BTreeMap<String, PathBuf>, profile: &Path) -> Value {
    match browser {
        Browser::Chromium => {
            let mut args: Vec<String> = [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(format!("--user-data-dir={}", profile.display()));
            if std::env::var_os("TERN_BROWSER_VERBOSE").is_some() {
                let log = target_dir()
                    .join("browser-logs")
                    .join("chromium-browser.log");
                args.push("--enable-logging".into());
                args.push(format!("--log-file={}", log.display()));
                args.push("--v=1".into());
            }
            json!({
                "browserName": "chrome",
                "acceptInsecureCerts": false,
                "goog:chromeOptions": { "binary": tools["CHROMIUM"], "args": args },
            })
        }
        Browser::Firefox => {
            let options = json!({
                "binary": tools["FIREFOX"],
                "args": ["-headless", "-profile", profile.display().to_string()],
            });
            json!({
                "browserName": "firefox",
                "acceptInsecureCerts": false,
                "moz:firefoxOptions": options,
            })
        }
    }
}

struct Outcome {
    name: &'static str,
    what: &'static str,
    ok: bool,
    text: String,
    took: Duration,
}

static VERSIONS_FILE: Mutex<()> = Mutex::new(());

/// Records `line` for `browser` in target/browser-versions.txt (one line per browser).
fn record_version(browser: Browser, line: &str) {
    let _g = VERSIONS_FILE.lock().unwrap_or_else(|e| e.into_inner());
    let path = target_dir().join("browser-versions.txt");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let prefix = format!("{} ", browser.name());
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .map(String::from)
        .collect();
    lines.push(line.to_string());
    lines.sort();
    let _ = std::fs::create_dir_all(target_dir());
    let _ = std::fs::write(&path, lines.join("\n") + "\n");
}

fn run_suite(browser: Browser) {
    let begin = Instant::now();
    let Some(tools) = tools(browser) else { return };
    let logs = target_dir().join("browser-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let name = browser.name();

    let mut server = Serve::start(TERN, logs.join(format!("{name}-serve.log")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let profile = TempDir(unique_dir(name));
    let driver =
        start_driver(browser, &tools, &profile.0, &logs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let t_session = Instant::now();
    let session =
        Session::new(&driver, capabilities(browser, &tools, &profile.0)).unwrap_or_else(|e| {
            panic!(
                "{name}: new WebDriver session: {e}\n(driver log: {})",
                driver.log.display()
            )
        });
    let caps = &session.capabilities;
    let version = caps["browserVersion"].as_str().unwrap_or("?").to_string();
    let driver_version = match browser {
        Browser::Chromium => caps["chrome"]["chromedriverVersion"]
            .as_str()
            .unwrap_or("?")
            .split(' ')
            .next()
            .unwrap_or("?")
            .to_string(),
        Browser::Firefox => caps["moz:geckodriverVersion"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
    };
    let version_line = format!(
        "{name} {version} ({} {}; driver {driver_version}; acceptInsecureCerts {})",
        caps["browserName"].as_str().unwrap_or("?"),
        caps["platformName"].as_str().unwrap_or("?"),
        caps["acceptInsecureCerts"]
    );
    eprintln!(
        "{name}: browser version {version} (session up in {:.1?}); {}",
        t_session.elapsed(),
        server.url
    );
    record_version(browser, &version_line);
    assert_eq!(
        caps["acceptInsecureCerts"],
        json!(false),
        "{name}: the driver accepts insecure certificates"
    );

    session
        .set_timeouts(Duration::from_secs(120), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    session
        .navigate(&server.page)
        .unwrap_or_else(|e| panic!("{name}: navigate to {}: {e}", server.page));
    let probe = session
        .execute(
            "return { wt: typeof WebTransport, secure: window.isSecureContext, url: window.TERN && TERN.url, \
             hash: window.TERN && TERN.hash };",
            json!([]),
        )
        .unwrap_or_else(|e| panic!("{name}: probing the page: {e}"));
    assert_eq!(
        probe["wt"], "function",
        "{name}: WebTransport in the page: {probe}"
    );
    assert_eq!(
        probe["secure"], true,
        "{name}: the page is not a secure context: {probe}"
    );
    assert_eq!(
        probe["url"].as_str(),
        Some(server.url.as_str()),
        "{name}: TERN.url: {probe}"
    );
    assert_eq!(
        probe["hash"].as_str(),
        Some(server.hash.as_str()),
        "{name}: TERN.hash: {probe}"
    );

    // Warm-up: a freshly started browser (Firefox especially, on a loaded machine) can take long over its
    // first HTTP/3 connection. One session that must become ready within 30 s, timed and reported; the
    // checks that follow keep their 10 s limits.
    let warm = session
        .execute_async(
            "const done = arguments[arguments.length - 1]; const t0 = performance.now(); \
             const wt = new WebTransport(TERN.url + 'echo?warmup', \
               { serverCertificateHashes: [{ algorithm: 'sha-256', value: TERN.hashBytes }] }); \
             const timer = setTimeout(() => done({ ok: false, error: 'not ready within 30 s' }), 30000); \
             wt.ready.then(() => { clearTimeout(timer); const ms = performance.now() - t0; \
               wt.close({ closeCode: 0, reason: '' }); done({ ok: true, ms }); }, \
               e => { clearTimeout(timer); done({ ok: false, error: String(e) }); });",
            json!([]),
            Duration::from_secs(40),
        )
        .unwrap_or_else(|e| panic!("{name}: warm-up session: {e}"));
    assert_eq!(warm["ok"], true, "{name}: warm-up session failed: {warm}");
    println!(
        "{name}: warm-up session ready in {:.0} ms",
        warm["ms"].as_f64().unwrap_or_default()
    );

    let mut outcomes = Vec::new();
    for check in CHECKS {
        let mark = server.mark();
        let start = Instant::now();
        let result = if let Some(gone) = server.exited() {
            Ok(json!({ "ok": false, "error": format!("not run: {gone}") }))
        } else if check.name == "tabs" {
            Ok(match concurrent_tabs(&session, &server, 10) {
                Ok(t) => json!({ "ok": true, "detail": t }),
                Err(e) => json!({ "ok": false, "error": e }),
            })
        } else {
            session.execute_async(
                CHECKS_JS,
                json!([check.name, browser.name()]),
                Duration::from_secs(150),
            )
        };
        let (mut ok, mut text) = match result {
            Ok(v) if v["ok"] == true => (true, v["detail"].as_str().unwrap_or("").to_string()),
            Ok(v) if v["ok"] == false && (check.name == "tabs" || server.exited().is_some()) => {
                (false, v["error"].as_str().unwrap_or("?").to_string())
            }
            Ok(v) if v["ok"] == false => (
                false,
                format!("JS: {}", v["error"].as_str().unwrap_or(&v.to_string())),
            ),
            Ok(v) => (false, format!("unexpected script result {v}")),
            Err(e) => (false, format!("WebDriver: {e}")),
        };
        if ok && !check.server_line.is_empty() {
            match server.wait_line(mark, check.server_line, Duration::from_secs(10)) {
                Ok(line) => text = format!("{text}; server: {line}"),
                Err(e) => {
                    ok = false;
                    text = format!("{text}; but {e}");
                }
            }
        }
        let took = start.elapsed();
        eprintln!(
            "{name}: {} {:<30} {:>7.2?}  {text}",
            if ok { "ok  " } else { "FAIL" },
            check.what,
            took
        );
        outcomes.push(Outcome {
            name: check.name,
            what: check.what,
            ok,
            text,
            took,
        });
    }
    {
        let start = Instant::now();
        let (ok, text) = match session_ends(&server) {
            Ok(t) => (true, t),
            Err(e) => (false, e),
        };
        let took = start.elapsed();
        let what = "every session's end reached tern";
        eprintln!(
            "{name}: {} {:<30} {:>7.2?}  {text}",
            if ok { "ok  " } else { "FAIL" },
            what,
            took
        );
        outcomes.push(Outcome {
            name: "session_ends",
            what,
            ok,
            text,
            took,
        });
    }
    drop(session);
    drop(driver);
    let problems: Vec<String> = std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(String::from)
        .collect();

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let mut report = format!(
        "\n{name} {version} against tern serve ({:.1?} in all):\n",
        begin.elapsed()
    );
    for o in &outcomes {
        report += &format!(
            "  {} {:<14} {:<30} {:>8.2?}  {}\n",
            if o.ok { "ok  " } else { "FAIL" },
            o.name,
            o.what,
            o.took,
            o.text
        );
    }
    report += &format!(
        "{name}: {} of {} checks passed\n",
        outcomes.len() - failed.len(),
        outcomes.len()
    );
    if !problems.is_empty() {
        report += &format!(
            "{name}: tern serve logged {} warnings/errors:\n",
            problems.len()
        );
        for p in problems.iter().take(20) {
            report += &format!("    {p}\n");
        }
    }
    if let Some(gone) = server.exited() {
        report += &format!("{name}: {gone}\n");
    }
    say(report.trim_end());
    if !failed.is_empty() {
        panic!(
            "{name} {version}: {} of {} checks failed: {}\n(logs: {}, {}; browser versions in {})",
            failed.len(),
            outcomes.len(),
            failed.iter().map(|o| o.name).collect::<Vec<_>>().join(", "),
            server.log.display(),
            logs.join(format!("{name}-driver.log")).display(),
            target_dir().join("browser-versions.txt").display()
        );
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `n` tabs load the page; at one wall-clock instant each opens a session and runs the echo checks, and
/// each keeps it open until a common later instant, so all `n` are open at once. Leaves one tab.
fn concurrent_tabs(session: &Session, server: &Serve, n: usize) -> Result<String, String> {
    let first = session.window()?;
    let mut tabs = Vec::new();
    for _ in 0..n {
        let tab = session.new_tab()?;
        session.switch_to(&tab)?;
        session.navigate(&server.page)?;
        tabs.push(tab);
    }
    let start_at = now_ms() + 1500;
    let hold_until = start_at + 6000;
    let mut problems = Vec::new();
    for (i, tab) in tabs.iter().enumerate() {
        session.switch_to(tab)?;
        let params = json!({ "index": i, "startAt": start_at, "holdUntil": hold_until });
        let v = session.execute_async(
            CHECKS_JS,
            json!(["tab_start", "", params]),
            Duration::from_secs(60),
        )?;
        if v["ok"] != true {
            problems.push(format!("tab {}: could not start: {v}", i + 1));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut results = vec![Value::Null; n];
    while results.iter().any(|r| r.is_null()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        for (i, tab) in tabs.iter().enumerate() {
            if !results[i].is_null() {
                continue;
            }
            session.switch_to(tab)?;
            let v =
                session.execute_async(CHECKS_JS, json!(["tab_result"]), Duration::from_secs(60))?;
            if v["done"] == true {
                results[i] = v;
            }
        }
    }
    let mut latest_ready = 0;
    let mut earliest_close = u64::MAX;
    for (i, r) in results.iter().enumerate() {
        if r.is_null() {
            problems.push(format!("tab {}: no result within 90 s", i + 1));
        } else if r["ok"] != true {
            problems.push(format!(
                "tab {}: JS: {}",
                i + 1,
                r["error"].as_str().unwrap_or(&r.to_string())
            ));
        } else {
            latest_ready = latest_ready.max(r["times"]["readyAt"].as_u64().unwrap_or(u64::MAX));
            earliest_close = earliest_close.min(r["times"]["closedAt"].as_u64().unwrap_or(0));
        }
    }
    for tab in &tabs {
        session.switch_to(tab)?;
        session.close_window()?;
    }
    session.switch_to(&first)?;
    if !problems.is_empty() {
        return Err(format!(
            "{} of {n} tabs failed: {}",
            problems.len(),
            problems.join("; ")
        ));
    }
    if latest_ready >= earliest_close {
        return Err(format!(
            "the {n} sessions were not all open at once: the last became ready at {latest_ready}, the first closed at {earliest_close}"
        ));
    }
    Ok(format!(
        "{n} tabs, {n} sessions open at once (all ready {} ms after the common start): each echoed 10 datagrams + \
         one of maxDatagramSize, 1 MiB bidi, 64 KiB uni byte-exact",
        latest_ready.saturating_sub(start_at)
    ))
}

/// Every session the checks opened must have ended at the server the way the page (or server) ended it:
/// `tern serve` prints `session from ADDR to PATH closed: code C reason "R"` for each.
fn session_ends(server: &Serve) -> Result<String, String> {
    let mut want: Vec<(String, &str)> = vec![
        ("/echo?check=datagrams".into(), "code 0 reason \"\""),
        ("/echo?check=bidi".into(), "code 0 reason \"\""),
        ("/echo?check=uni".into(), "code 0 reason \"\""),
        ("/push".into(), "code 0 reason \"\""),
        ("/close?code=42&reason=bye".into(), "code 42 reason \"bye\""),
        ("/echo?check=page_close".into(), "code 7 reason \"done\""),
        ("/reset?code=99".into(), "code 0 reason \"\""),
        ("/echo?check=page_abort".into(), "code 0 reason \"\""),
    ];
    for i in 0..10 {
        want.push((format!("/echo?check=concurrent-{i}"), "code 0 reason \"\""));
        want.push((format!("/echo?check=tab-{i}"), "code 0 reason \"\""));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut missing: Vec<String>;
    let mut wrong: Vec<String>;
    loop {
        let lines = server.lines();
        missing = Vec::new();
        wrong = Vec::new();
        for (path, how) in &want {
            let needle = format!(" to {path} closed: ");
            match lines.iter().find(|l| l.contains(&needle)) {
                None => missing.push(path.clone()),
                Some(l) if !l.ends_with(how) => wrong.push(format!("{l} (expected {how})")),
                Some(_) => {}
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if missing.is_empty() && wrong.is_empty() {
        return Ok(format!(
            "{} sessions: tern printed each one's end with the expected code and reason",
            want.len()
        ));
    }
    let mut e = String::new();
    if !missing.is_empty() {
        e += &format!(
            "no end seen within 10 s after the checks for {}",
            missing.join(", ")
        );
    }
    if !wrong.is_empty() {
        if !e.is_empty() {
            e += "; ";
        }
        e += &format!("ended otherwise: {}", wrong.join("; "));
    }
    Err(e)
}

#[test]
fn chromium_against_tern_serve() {
    run_suite(Browser::Chromium);
}

#[test]
fn firefox_against_tern_serve() {
    run_suite(Browser::Firefox);
}
