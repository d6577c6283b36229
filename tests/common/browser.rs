//! Opening an HTML page in headless Chromium: the DOM it builds, its
//! console, and a screenshot that must be a page rather than a blank.
#![allow(dead_code, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;

pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Opens the page headless: the DOM holds the same charts and tables, the
/// console says nothing, and the screenshot is a page, not a blank.
pub fn in_chromium(dir: &Path, file: &Path, html: &str) {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("EFRLHF_REQUIRE_BROWSER").is_none(),
            "EFRLHF_REQUIRE_BROWSER is set but no Chromium is installed"
        );
        eprintln!("no Chromium here: the browser half of this test is skipped");
        return;
    };
    let page = format!("file://{}", file.display());
    let run = |extra: &[&str]| {
        let out = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args([
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1280,2000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium").display()
            ))
            .args(extra)
            .arg(&page)
            .current_dir(dir)
            .output()
            .unwrap();
        super::assert_success(&out);
        out
    };
    let dom = run(&["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    for tag in ["<svg", "<table", "<figure"] {
        assert_eq!(
            text.matches(tag).count(),
            html.matches(tag).count(),
            "{tag}"
        );
    }
    let console: Vec<&str> = String::from_utf8_lossy(&dom.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(|_| "console message")
        .collect();
    assert!(
        console.is_empty(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    run(&["--screenshot=shot.png"]);
    let (w, h, pixels) = rgb(&dir.join("shot.png"));
    assert_eq!((w, h), (1280, 2000));
    let inked = pixels.iter().filter(|p| p.iter().any(|c| *c < 200)).count();
    let colours: std::collections::BTreeSet<&[u8; 3]> = pixels.iter().collect();
    assert!(
        inked * 100 > pixels.len(),
        "{inked} of {} pixels drawn",
        pixels.len()
    );
    assert!(colours.len() > 50, "{} colours", colours.len());
}

pub fn rgb(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}
