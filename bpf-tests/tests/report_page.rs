//! The report page (`report.html`) as a browser shows it: headless Chromium loads the sample
//! drill's page with the network cut off, and the test checks the DOM it built (the timeline
//! SVG with its fault windows and series, the verdict, every expectation) and its screenshot
//! (drawn, with the red "failed" banner at the top). The page must load nothing from elsewhere.
//!
//! Needs the Debian package `chromium` (`cargo xtask setup` installs it); skipped where it is
//! missing (the VM images have no browser). `CHAOS_REPORT_PAGE_DIR=DIR` keeps the page and the
//! screenshot in DIR to look at.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{skip_unless, world::unique_name};
use chaos_user::experiment::{html, sample};

/// A temporary directory removed on drop, or the kept one from `CHAOS_REPORT_PAGE_DIR`.
struct OutDir {
    path: PathBuf,
    keep: bool,
}

impl OutDir {
    fn new() -> OutDir {
        let (path, keep) = match std::env::var_os("CHAOS_REPORT_PAGE_DIR") {
            Some(dir) => (PathBuf::from(dir), true),
            None => (std::env::temp_dir().join(unique_name()), false),
        };
        std::fs::create_dir_all(&path).expect("creating the output directory");
        OutDir { path, keep }
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn chromium() -> Result<&'static str, String> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|p| bpf_tests::cmd::have(p))
        .ok_or_else(|| "chromium is not installed (`cargo xtask setup` installs it)".to_owned())
}

/// Runs headless Chromium on `page` with `args`, with no network and its own profile in `dir`;
/// gives its stdout. Killed after a minute.
fn run_chromium(browser: &str, dir: &Path, page: &Path, args: &[String]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            // Chromium refuses to run as root with its sandbox.
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            // Nothing resolves: a resource from elsewhere could not load.
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().expect("chromium's stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took more than a minute on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium failed: {status}");
    reader.join().expect("reading chromium's output")
}

/// A 1280x2000 screenshot of `page` at `shot`.
fn screenshot(browser: &str, dir: &Path, page: &Path, shot: &Path) {
    run_chromium(
        browser,
        dir,
        page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".to_owned(),
            "--hide-scrollbars".to_owned(),
        ],
    );
}

/// Every `src="..."` / `href="..."` value of `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\"", "src='", "href='"] {
        let quote = &attr[attr.len() - 1..];
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            out.push(rest[..rest.find(quote).unwrap_or(rest.len())].to_owned());
        }
    }
    out
}

/// `text` as a DOM serialisation writes it in an element.
fn text_in_dom(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `d` of each `<path class="{class}" ...>` in `dom`.
fn path_data(dom: &str, class: &str) -> Vec<String> {
    let tag = format!("class=\"{class}\"");
    dom.match_indices(&tag)
        .filter_map(|(i, _)| {
            let end = dom[i..].find('>')? + i;
            let start = dom[..i].rfind('<')?;
            let element = &dom[start..end];
            let d = element.find(" d=\"")? + 4;
            Some(element[d..d + element[d..].find('"')?].to_owned())
        })
        .collect()
}

#[test]
fn report_page_in_headless_chromium() {
    skip_unless!(chromium().map(|_| ()));
    let browser = chromium().expect("checked above");
    let report = sample::failed();
    let page_html = html::render(&report);

    // Self-contained: nothing is fetched, no script is needed.
    let external: Vec<String> = links(&page_html)
        .into_iter()
        .filter(|l| l.contains("//") || l.starts_with("http"))
        .collect();
    assert!(
        external.is_empty(),
        "the page links elsewhere: {external:?}"
    );
    assert!(!page_html.contains("@import"), "the CSS imports something");
    assert!(!page_html.contains("url("), "the CSS loads something");

    let dir = OutDir::new();
    let page = dir.path.join("report.html");
    std::fs::write(&page, &page_html).expect("writing the page");

    let dom = run_chromium(browser, &dir.path, &page, &["--dump-dom".to_owned()]);
    assert!(
        dom.contains("<svg id=\"timeline\""),
        "no timeline in the DOM"
    );
    assert!(dom.contains("FAILED"), "no verdict in the DOM");
    let reason = report.reason.as_deref().expect("the sample has a reason");
    assert!(dom.contains(&text_in_dom(reason)), "no reason in the DOM");
    assert_eq!(
        dom.matches("class=\"fault-window\"").count(),
        report.faults.len(),
        "one shaded window per fault"
    );
    for f in &report.faults {
        assert!(
            dom.contains(&format!("class=\"fault-window\" data-fault=\"{}\"", f.name)),
            "no window for fault {}",
            f.name
        );
    }
    for class in [
        "series throughput",
        "series errors",
        "series p50",
        "series p99",
    ] {
        let paths = path_data(&dom, class);
        assert_eq!(
            paths.len(),
            report.traffic.len(),
            "{class} paths: {paths:?}"
        );
        for d in paths {
            assert!(
                d.starts_with('M') && d.matches('L').count() >= 5,
                "{class}: {d}"
            );
        }
    }
    assert_eq!(path_data(&dom, "series acted").len(), report.faults.len());
    let checks: usize = report.probes.iter().map(|p| p.series.len()).sum();
    assert_eq!(
        dom.matches("class=\"probe-check ").count(),
        checks,
        "one mark per probe check"
    );
    assert!(dom.contains("class=\"phase-mark\""));
    assert!(dom.contains("class=\"time-to-recover\""));
    for e in &report.expectations {
        assert!(
            dom.contains(&format!("class=\"expectation\" data-path=\"{}\"", e.path)),
            "no row for {}",
            e.path
        );
    }

    let shot = dir.path.join("report.png");
    screenshot(browser, &dir.path, &page, &shot);
    check_screenshot(&shot, "red", |p| p[0] > 190 && p[1] < 60 && p[2] < 70);
    if dir.keep {
        println!("page and screenshot kept in {}", dir.path.display());
    }
}

/// The screenshot is 1280 × 2000, drawn (many colours, much not white), with the verdict's
/// banner (pixels that are `banner`, named `colour`) near its top.
fn check_screenshot(path: &Path, colour: &str, banner: impl Fn(&[u8; 3]) -> bool) {
    let file = std::fs::File::open(path).expect("chromium wrote no screenshot");
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .expect("decoding the screenshot");
    assert_eq!((info.width, info.height), (1280, 2000));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "colour type {:?}", info.color_type);
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let mut colours: Vec<[u8; 3]> = pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 100,
        "only {} colours: blank?",
        colours.len()
    );
    let background = pixels
        .iter()
        .filter(|p| p.iter().all(|&c| c >= 240))
        .count();
    assert!(
        background < pixels.len() * 95 / 100,
        "{background} of {} pixels are white or page background",
        pixels.len()
    );
    let width = info.width as usize;
    let count = pixels[..200 * width].iter().filter(|p| banner(p)).count();
    assert!(
        count > 20_000,
        "{count} {colour} pixels in the top 200 rows: no {colour} verdict banner"
    );
}

#[test]
fn refused_report_page_in_headless_chromium() {
    skip_unless!(chromium().map(|_| ()));
    let browser = chromium().expect("checked above");
    let report = sample::refused();
    let dir = OutDir::new();
    let page = dir.path.join("refused.html");
    std::fs::write(&page, html::render(&report)).expect("writing the page");

    let dom = run_chromium(browser, &dir.path, &page, &["--dump-dom".to_owned()]);
    assert!(dom.contains("REFUSED"), "no verdict in the DOM");
    assert!(
        dom.contains("No traffic was measured: admission refused the drill"),
        "no note in place of the traffic panels"
    );
    // The probes checked during admission are drawn; no traffic, no fault window.
    assert!(dom.contains("<svg id=\"timeline\""));
    assert!(dom.contains("class=\"probe-check failed\""));
    assert!(!dom.contains("class=\"fault-window\""));
    assert!(path_data(&dom, "series throughput").is_empty());
    assert!(dom.contains("not started"));

    let shot = dir.path.join("refused.png");
    screenshot(browser, &dir.path, &page, &shot);
    // The refused banner is grey (#6e7781).
    check_screenshot(&shot, "grey", |p| {
        p.iter()
            .zip([110u8, 119, 129])
            .all(|(&c, g)| c.abs_diff(g) < 12)
    });
}
