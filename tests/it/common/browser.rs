//! A real browser for the web page's tests: Debian's Chromium, headless, started by PID for
//! one page load at a time, with a profile of its own in a temporary directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ChildGuard;

/// How long one page load may take, the page's own script included.
const LOAD: Duration = Duration::from_secs(60);
/// Milliseconds of the page's own time (its timers) Chromium lets pass before it reports:
/// the page's first refresh and the lookups it starts.
const PAGE_TIME_MS: &str = "4000";

/// Whether Chromium is installed.
pub(crate) fn available() -> bool {
    Command::new("chromium").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn chromium(profile: &Path, args: &[&str], url: &str) -> Option<String> {
    let child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={PAGE_TIME_MS}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut guard = ChildGuard::new(child);
    // Read stdout on a thread: a page larger than the pipe would block the browser.
    let mut out = guard.take_stdout().expect("chromium's stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).ok().map(|_| text)
    });
    let status = guard.wait_exit(LOAD)?;
    let text = reader.join().ok().flatten()?;
    status.success().then_some(text)
}

/// The page's DOM as Chromium has it once its script has run: `--dump-dom`.
pub(crate) fn dom(profile: &Path, url: &str) -> Option<String> {
    chromium(profile, &["--dump-dom"], url)
}

/// A screenshot of the page, 1280×1000, written to `png`.
pub(crate) fn screenshot(profile: &Path, url: &str, png: &Path) -> bool {
    let arg = format!("--screenshot={}", png.display());
    chromium(profile, &[&arg, "--window-size=1280,1000", "--hide-scrollbars"], url).is_some() && png.exists()
}
